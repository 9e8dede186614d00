"""What the benchmark scripts print about the machine they ran on."""
import os
import platform


def machine() -> str:
  """CPU model and the cores this process may use, e.g. 'AMD EPYC 7B13, 2 cores'."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
  except OSError:
    pass
  return f"{model}, {len(os.sched_getaffinity(0))} cores"
