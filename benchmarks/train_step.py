r"""One OPERA-GT AcuLa training step: this repo's JAX step vs the authors' PyTorch formulation, same run.

  .venv/bin/python benchmarks/train_step.py [--batch=48] [--accum=1] [--steps=3] [--warmup=1]
      [--threads=N] [--loss=reference_gram|linear_cka] [--text_dim=384] [--decoder_depth=6]
      [--torch_attention=sdpa|manual] [--schedule=interleaved|sequential] [--phase=both|jax|torch]
      [--skip_attention] [--json]

Both sides run the same step at full size: OPERA-GT's MAE ViT-S (256 x 64 log-mel, 4 x 4 patches ->
1024 tokens, width 384, 12 pre-LN blocks, 6 heads), 70% masking, a transformer decoder (width 256, 8 heads,
`--decoder_depth` blocks; default `opera_gt.CONFIG`), the MAE loss on masked patches, a second,
unmasked encoder pass whose pooled features feed the audio head (384 -> 1024 -> 512), a text head
(text_dim -> 1024 -> 512) on teacher embeddings, the alignment loss, global-norm clipping at 1.0 and AdamW.

  JAX:   `acula_jax.models.acula.AculaModel` built from `configs/acula.py`, `train.create_optimizer` and
         `train.make_train_step` (jitted, donated state, shardings from `sharding.make_mesh()`), exactly
         as `train.train_and_evaluate` builds them. Input: random waveforms, so the step includes the
         log-mel front end; the log-mel alone is timed too, and the table also gives the step without it.
  torch: plain torch.nn (no timm): Conv2d patch embedding, timm-layout blocks with
         F.scaled_dot_product_attention (or, --torch_attention=manual, the older timm Block's explicit
         softmax(q k^T) v), MAE's random masking and decoder, MLP heads, loss =
         (1 - reference Gram "CKA") + MAE loss, torch.optim.AdamW, clip_grad_norm_(1.0). Input:
         precomputed spectrograms (librosa, outside the timing), as the authors' loader provides them.

Each framework runs in its own child process (so peak RSS is per framework and the thread pools do not
compete), pinned to the same `--threads` cores (sched_setaffinity + torch.set_num_threads). Warm-up steps
(JAX compilation) are excluded from the timing. By default (`--schedule=interleaved`) both children stay
up after their warm-up and take turns step by step, which matters on shared VMs whose speed drifts by
tens of percent within minutes. `--accum=K` splits each step into K micro-batches on both sides (JAX's
`config.grad_accum_steps`; torch: K backward passes, one optimizer step), the way to run batch 48 on a
machine whose RAM does not hold it at once. Prints a markdown table.
"""
import argparse
import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import time

import numpy as np

from machine_info import machine  # benchmarks/, on sys.path when run as a script

REPO = pathlib.Path(__file__).resolve().parents[1]
_RESULT_TAG = "@@RESULT@@ "
_READY_TAG = "@@READY@@"
_STEP_TAG = "@@STEP@@ "
SAMPLE_RATE = 16000
HOP = 512
SPEC_SHAPE = (256, 64)
PATCH = (4, 4)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="\n".join(__doc__.splitlines()[1:]))
  parser.add_argument("--batch", type=int, default=48, help="global batch (paper: 48)")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per framework")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (JAX: compiles)")
  parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="CPU cores for each framework (default: all this process may use)")
  parser.add_argument("--loss", choices=("reference_gram", "linear_cka"), default="reference_gram",
                      help="JAX alignment loss (torch always uses the authors' reference Gram loss)")
  parser.add_argument("--text_dim", type=int, default=384, help="teacher width (MiniLM 384)")
  parser.add_argument("--decoder_depth", type=int, default=None,
                      help="MAE decoder blocks (default: opera_gt.CONFIG's)")
  parser.add_argument("--torch_attention", choices=("sdpa", "manual"), default="sdpa",
                      help="torch attention: sdpa = F.scaled_dot_product_attention (timm >= 0.9); manual = "
                      "softmax(q k^T) v with the scores materialised (timm <= 0.6, the MAE/OPERA era)")
  parser.add_argument("--accum", type=int, default=1,
                      help="micro-batches per step on both sides (JAX: config.grad_accum_steps; torch: "
                      "backward per micro-batch, one optimizer step), for batches that do not fit in RAM")
  parser.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved",
                      help="interleaved: both children stay up and take turns step by step, so that a "
                      "machine whose speed drifts (shared VMs) slows both alike; sequential: one after "
                      "the other")
  parser.add_argument("--skip_attention", action="store_true",
                      help="diagnostic: both sides replace softmax(q k^T / sqrt(d)) v by v (projections "
                      "kept), so that the difference to a normal run is the attention's share of the step")
  parser.add_argument("--phase", choices=("both", "jax", "torch"), default="both",
                      help="run both frameworks (each in a child process) or only one, in-process")
  parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # child of --schedule=interleaved
  parser.add_argument("--json", action="store_true", help="print the results as JSON after the table")
  args = parser.parse_args(argv)
  for name in ("batch", "steps", "threads", "text_dim", "accum"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  if args.warmup < 0:
    parser.error("--warmup must be >= 0")
  if args.batch % args.accum:
    parser.error(f"--batch={args.batch} does not split into --accum={args.accum} micro-batches")
  return args


def _peak_rss_mib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _pin_threads(threads):
  """Restricts this process to `threads` cores before any thread pool starts."""
  cores = sorted(os.sched_getaffinity(0))
  if threads > len(cores):
    raise SystemExit(f"--threads={threads} but only {len(cores)} cores are available")
  os.sched_setaffinity(0, cores[:threads])


def _num_samples(frames=SPEC_SHAPE[0], hop=HOP):
  """Waveform length whose centred STFT has `frames` frames (as input_pipeline.clip_samples)."""
  return (frames - 1) * hop


def _inputs(batch, text_dim):
  rng = np.random.default_rng(0)
  waves = (rng.standard_normal((batch, _num_samples())) * 0.1).astype(np.float32)
  text = rng.standard_normal((batch, text_dim)).astype(np.float32)
  return waves, text


def _drive(args, one_step, warmup, cpu):
  """Warm-up then timed steps: all at once, or (--serve) one per "step" line the parent sends.

  Returns (wall seconds of each warm-up step, of each timed step); `cpu` receives CPU seconds.
  """
  if not args.serve:
    return _timed(one_step, warmup, args.steps, cpu)
  warm, _ = _timed(one_step, warmup, 0)
  print(_READY_TAG, flush=True)
  timed = []
  for line in sys.stdin:
    if line.strip() != "step":
      break
    _, [seconds] = _timed(one_step, 0, 1, cpu)
    timed.append(seconds)
    print(_STEP_TAG + json.dumps({"s": seconds}), flush=True)
  return warm, timed


def _timed(fn, warmup, steps, cpu=None):
  """Runs fn() warmup + steps times; returns (wall seconds of each warm-up call, of each timed call).

  `cpu`, if a list, receives the process CPU seconds (all threads) of each timed call: on a shared
  machine that is steadier than wall time, though it also counts spin-waiting threads.
  """
  warm, timed = [], []
  for i in range(warmup + steps):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    (warm if i < warmup else timed).append(time.perf_counter() - start)
    if cpu is not None and i >= warmup:
      cpu.append(time.process_time() - start_cpu)
  return warm, timed


# ----------------------------------------------------------------------------------------------------
# JAX: the repo's own step.


def build_jax_step(args):
  """The JAX side as train.train_and_evaluate builds it.

  Returns (config, number of parameters, sharded state, jitted train step, sharded batch).
  """
  sys.path.insert(0, str(REPO))  # configs/ is not an installed package
  import jax
  from flax import nnx

  from acula_jax import input_pipeline
  from acula_jax import sharding
  from acula_jax import train
  from acula_jax.models import acula
  from acula_jax.models import opera_gt
  from configs import acula as acula_config

  gt = opera_gt.CONFIG
  config = acula_config.get_config(f"encoder=opera_gt,loss={args.loss}")
  config.model.update(
      width=gt["width"], depth=gt["depth"], num_heads=gt["num_heads"], mlp_ratio=gt["mlp_ratio"],
      decoder_width=gt["decoder_width"], decoder_heads=gt["decoder_heads"],
      decoder_depth=args.decoder_depth or gt["decoder_depth"], mask_ratio=gt["mask_ratio"],
      norm_pix_loss=gt["norm_pix_loss"], spec_shape=gt["spec_shape"], dtype="float32")
  config.batch_size = args.batch
  config.grad_accum_steps = args.accum
  config.align_features = "full"  # the authors' second, unmasked pass
  if input_pipeline.clip_samples(config) != _num_samples():
    raise AssertionError("clip length differs from input_pipeline.clip_samples")

  model = acula.AculaModel(config, args.text_dim, rngs=nnx.Rngs(config.seed))
  num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  tx, _ = train.create_optimizer(config, total_steps=10_000)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  mesh = sharding.make_mesh()
  state_sharding = jax.tree.map(lambda _: sharding.replicated(mesh), state)
  state = jax.device_put(state, state_sharding)
  train_step = train.make_train_step(graphdef, config, state_sharding, sharding.batch_sharding(mesh))
  waves, text = _inputs(args.batch, args.text_dim)
  batch = sharding.shard_batch({"audio": waves, "text_embedding": text}, mesh)
  return config, num_params, state, train_step, batch


def run_jax(args) -> dict:
  import jax

  from acula_jax.audio import frontends

  if args.skip_attention:  # diagnostic (see --help); patched before anything is traced
    from acula_jax.models import attention
    attention.dot_product_attention = lambda q, k, v, **unused: v

  config, num_params, state, train_step, batch = build_jax_step(args)
  rng = jax.random.key(0)
  rss_built = _peak_rss_mib()

  holder = {"state": state, "step": 0, "metrics": None}

  def one_step():
    holder["state"], holder["metrics"] = train_step(
        holder["state"], batch, jax.random.fold_in(rng, holder["step"]))
    jax.block_until_ready((holder["state"], holder["metrics"]))
    holder["step"] += 1

  cpu = []
  warm, timed = _drive(args, one_step, max(args.warmup, 1), cpu)  # >= 1: never time a compile
  rss_stepped = _peak_rss_mib()
  loss = float(holder["metrics"]["loss"])

  log_mel = jax.jit(lambda w: frontends.spectrogram(w, **config.audio))
  run_log_mel = lambda: jax.block_until_ready(log_mel(batch["audio"]))
  _, mel_timed = _timed(run_log_mel, 1, max(args.steps, 3))
  return dict(
      framework="jax", version=f"jax {jax.__version__}", devices=f"{jax.device_count()} "
      f"{jax.devices()[0].platform}", num_params=num_params, warmup_s=warm, step_s=timed,
      cpu_s=cpu, log_mel_s=mel_timed, loss=loss, rss_built_mib=rss_built, rss_peak_mib=rss_stepped,
      decoder_depth=config.model.decoder_depth, loss_name=args.loss)


# ----------------------------------------------------------------------------------------------------
# PyTorch: the authors' formulation, plain torch.nn.


def _sincos_2d(dim, rows, cols):
  """MAE's fixed 2-D sin-cos table with a zero cls row, [1 + rows * cols, dim]."""
  def one_d(d, pos):
    freqs = 1.0 / 10000 ** (np.arange(d // 2) / (d // 2))
    angles = pos.reshape(-1)[:, None] * freqs[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
  r, c = np.meshgrid(np.arange(rows, dtype=np.float64), np.arange(cols, dtype=np.float64),
                     indexing="ij")
  emb = np.concatenate([one_d(dim // 2, c), one_d(dim // 2, r)], axis=1)
  return np.concatenate([np.zeros((1, dim)), emb]).astype(np.float32)


def build_torch_model(torch, *, decoder_depth, text_dim, attention="sdpa", width=384, depth=12, heads=6,
                      decoder_width=256, decoder_heads=8, mlp_ratio=4.0, mask_ratio=0.7):
  """The authors' AcuLa model in plain torch: OPERA-GT MAE ViT-S + two projection MLPs."""
  nn = torch.nn
  functional = torch.nn.functional

  class Attention(nn.Module):
    def __init__(self, dim, num_heads):
      super().__init__()
      self.num_heads = num_heads
      self.qkv = nn.Linear(dim, 3 * dim)
      self.proj = nn.Linear(dim, dim)

    def forward(self, x):
      b, n, c = x.shape
      qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
      q, k, v = qkv.unbind(0)
      if attention == "skip":  # --skip_attention (a diagnostic)
        x = v
      elif attention == "manual":  # timm <= 0.6 / the MAE-era Block: the n x n scores materialised
        scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
        x = scores.softmax(dim=-1) @ v
      else:  # timm >= 0.9 (fused_attn): a fused kernel (flash attention on CPU)
        x = functional.scaled_dot_product_attention(q, k, v)
      return self.proj(x.transpose(1, 2).reshape(b, n, c))

  class Block(nn.Module):
    def __init__(self, dim, num_heads):
      super().__init__()
      self.norm1 = nn.LayerNorm(dim, eps=1e-6)
      self.attn = Attention(dim, num_heads)
      self.norm2 = nn.LayerNorm(dim, eps=1e-6)
      hidden = int(dim * mlp_ratio)
      self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.mlp(self.norm2(x))

  class MAEViT(nn.Module):
    """facebookresearch/mae `MaskedAutoencoderViT` layout on [B, T, F] spectrograms (OPERA-GT)."""

    def __init__(self):
      super().__init__()
      self.grid = (SPEC_SHAPE[0] // PATCH[0], SPEC_SHAPE[1] // PATCH[1])
      self.patch_embed = nn.Conv2d(1, width, kernel_size=PATCH, stride=PATCH)
      self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
      self.register_buffer("pos_embed", torch.from_numpy(_sincos_2d(width, *self.grid))[None])
      self.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
      self.norm = nn.LayerNorm(width, eps=1e-6)
      self.fc_norm = nn.LayerNorm(width, eps=1e-6)
      self.decoder_embed = nn.Linear(width, decoder_width)
      self.mask_token = nn.Parameter(torch.randn(1, 1, decoder_width) * 0.02)
      self.register_buffer("decoder_pos_embed",
                           torch.from_numpy(_sincos_2d(decoder_width, *self.grid))[None])
      self.decoder_blocks = nn.ModuleList(
          [Block(decoder_width, decoder_heads) for _ in range(decoder_depth)])
      self.decoder_norm = nn.LayerNorm(decoder_width, eps=1e-6)
      self.decoder_pred = nn.Linear(decoder_width, PATCH[0] * PATCH[1])

    def patchify(self, spec):
      b, t, f = spec.shape
      x = spec.reshape(b, t // PATCH[0], PATCH[0], f // PATCH[1], PATCH[1]).permute(0, 1, 3, 2, 4)
      return x.reshape(b, -1, PATCH[0] * PATCH[1])

    def embed(self, spec):
      x = self.patch_embed(spec[:, None]).flatten(2).transpose(1, 2)
      return x + self.pos_embed[:, 1:]

    def encode(self, x):
      cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
      x = torch.cat([cls, x], dim=1)
      for block in self.blocks:
        x = block(x)
      return x

    def random_masking(self, x):
      b, n, d = x.shape
      keep = int(n * (1 - mask_ratio))
      noise = torch.rand(b, n)
      ids_shuffle = torch.argsort(noise, dim=1)
      ids_restore = torch.argsort(ids_shuffle, dim=1)
      visible = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
      mask = torch.ones(b, n)
      mask[:, :keep] = 0
      return visible, torch.gather(mask, 1, ids_restore), ids_restore

    def decode(self, latent, ids_restore):
      x = self.decoder_embed(self.norm(latent))
      b, n = ids_restore.shape
      mask_tokens = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
      seq = torch.cat([x[:, 1:], mask_tokens], dim=1)
      seq = torch.gather(seq, 1, ids_restore[:, :, None].expand(-1, -1, x.shape[2]))
      x = torch.cat([x[:, :1], seq], dim=1) + self.decoder_pos_embed
      for block in self.decoder_blocks:
        x = block(x)
      return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def mae_loss(self, spec):
      visible, mask, ids_restore = self.random_masking(self.embed(spec))
      pred = self.decode(self.encode(visible), ids_restore)
      per_patch = ((pred - self.patchify(spec)) ** 2).mean(dim=-1)
      return (per_patch * mask).sum() / mask.sum()

    def features(self, spec):
      x = self.encode(self.embed(spec))
      return self.fc_norm(x[:, 1:].mean(dim=1))

  def mlp(in_dim):
    return nn.Sequential(nn.Linear(in_dim, 1024), nn.GELU(), nn.Linear(1024, 512))

  class Acula(nn.Module):
    def __init__(self):
      super().__init__()
      self.encoder = MAEViT()
      self.audio_head = mlp(width)
      self.text_head = mlp(text_dim)

    def forward(self, spec, text):
      mae = self.encoder.mae_loss(spec)
      a = self.audio_head(self.encoder.features(spec))  # second, unmasked pass
      t = self.text_head(text)
      g_a, g_t = a.T @ a, t.T @ t  # the reference "CKA": d x d Gram matrices
      sim = (g_a * g_t).sum() / (torch.linalg.norm(g_a) * torch.linalg.norm(g_t))
      return (1.0 - sim) + mae

  return Acula()


def _librosa_log_mel(wave):
  import librosa
  spec = librosa.feature.melspectrogram(y=wave, sr=SAMPLE_RATE, n_fft=1024, hop_length=HOP,
                                        n_mels=64, fmin=50, fmax=8000)
  spec = librosa.power_to_db(spec, ref=np.max, top_db=80.0)
  return ((spec - spec.min()) / (spec.max() - spec.min())).T


def run_torch(args) -> dict:
  import torch
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  gt_decoder_depth = args.decoder_depth or _opera_decoder_depth()
  attention = "skip" if args.skip_attention else args.torch_attention
  model = build_torch_model(torch, decoder_depth=gt_decoder_depth, text_dim=args.text_dim,
                            attention=attention)
  model.train()
  num_params = sum(p.numel() for p in model.parameters())
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
  scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 400))

  waves, text = _inputs(args.batch, args.text_dim)
  spec = torch.from_numpy(np.stack([_librosa_log_mel(w) for w in waves]).astype(np.float32))
  if tuple(spec.shape[1:]) != SPEC_SHAPE:
    raise AssertionError(f"spectrogram shape {tuple(spec.shape)}")
  text = torch.from_numpy(text)
  rss_built = _peak_rss_mib()
  holder = {}

  def one_step():
    optimizer.zero_grad(set_to_none=True)
    loss = 0.0
    for k in range(args.accum):  # rows k, k + accum, ...: JAX's micro-batches
      micro_loss = model(spec[k::args.accum], text[k::args.accum]) / args.accum
      micro_loss.backward()
      loss += micro_loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    holder["loss"] = float(loss)

  cpu = []
  warm, timed = _drive(args, one_step, args.warmup, cpu)
  return dict(
      framework="torch", version=f"torch {torch.__version__}", devices=f"{torch.get_num_threads()} "
      "threads", num_params=num_params, warmup_s=warm, step_s=timed, cpu_s=cpu, loss=holder["loss"],
      rss_built_mib=rss_built, rss_peak_mib=_peak_rss_mib(), decoder_depth=gt_decoder_depth,
      attention=attention)


def _opera_decoder_depth():
  """CONFIG's decoder depth, read from the source so that the torch child never imports jax."""
  import ast
  tree = ast.parse((REPO / "acula_jax" / "models" / "opera_gt.py").read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CONFIG":
      for keyword in node.value.keywords:
        if keyword.arg == "decoder_depth":
          return ast.literal_eval(keyword.value)
  raise LookupError("CONFIG.decoder_depth not found in acula_jax/models/opera_gt.py")


# ----------------------------------------------------------------------------------------------------
# Driver.


def _child_argv(args, phase):
  argv = [sys.executable, str(pathlib.Path(__file__).resolve()), f"--phase={phase}",
          f"--batch={args.batch}", f"--steps={args.steps}", f"--warmup={args.warmup}",
          f"--threads={args.threads}", f"--loss={args.loss}", f"--text_dim={args.text_dim}",
          f"--torch_attention={args.torch_attention}", f"--accum={args.accum}"]
  if args.decoder_depth:
    argv.append(f"--decoder_depth={args.decoder_depth}")
  if args.skip_attention:
    argv.append("--skip_attention")
  return argv


def _child_env():
  return dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))


def _child(args, phase) -> dict:
  """Runs one framework to completion in a child process (--schedule=sequential)."""
  argv = _child_argv(args, phase)
  print(f"[{phase}] {shlex.join(argv[1:])}", file=sys.stderr, flush=True)
  proc = subprocess.run(argv, env=_child_env(), cwd=REPO, stdout=subprocess.PIPE, text=True)
  if proc.returncode:
    raise SystemExit(f"{phase} phase failed (exit {proc.returncode}); its stderr is above")
  lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_TAG)]
  return json.loads(lines[-1][len(_RESULT_TAG):])


def _read_until(proc, phase, tag):
  """The payload of the child's next stdout line that starts with `tag`."""
  for line in proc.stdout:
    if line.startswith(tag):
      return line[len(tag):].strip()
  raise SystemExit(f"{phase} phase failed (exit {proc.wait()}) before printing {tag.strip()}; "
                   "its stderr is above")


def _interleaved(args) -> dict:
  """Both frameworks built and warmed up in resident children, then timed step by step in turns.

  On a shared VM the machine's speed drifts by tens of percent over minutes; alternating the
  frameworks step by step (and which one goes first each round) exposes both to the same drift.
  Both children hold their memory throughout, so the machine needs room for the two at once.
  """
  procs = {}
  try:
    for phase in ("jax", "torch"):  # one at a time: a compiling child must not slow the other
      argv = _child_argv(args, phase) + ["--serve"]
      print(f"[{phase}] {shlex.join(argv[1:])}", file=sys.stderr, flush=True)
      procs[phase] = subprocess.Popen(argv, env=_child_env(), cwd=REPO, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
      _read_until(procs[phase], phase, _READY_TAG)
    for step in range(args.steps):
      for phase in (("jax", "torch") if step % 2 == 0 else ("torch", "jax")):
        time.sleep(1.0)  # lets the other framework's spinning worker threads go idle
        procs[phase].stdin.write("step\n")
        procs[phase].stdin.flush()
        seconds = json.loads(_read_until(procs[phase], phase, _STEP_TAG))["s"]
        print(f"[{phase}] step {step + 1}/{args.steps}: {seconds:.2f} s", file=sys.stderr, flush=True)
    results = {}
    for phase, proc in procs.items():
      proc.stdin.write("finish\n")
      proc.stdin.close()
      results[phase] = json.loads(_read_until(proc, phase, _RESULT_TAG))
      proc.wait()
    return results
  finally:
    for proc in procs.values():
      if proc.poll() is None:
        proc.kill()


def _mean(xs):
  return sum(xs) / len(xs)


def _rss(r):
  return f"{r['rss_built_mib'] / 1024:.1f} / {r['rss_peak_mib'] / 1024:.1f}"


def report(args, results, command) -> str:
  jx, pt = results.get("jax"), results.get("torch")
  versions = ", ".join(r["version"] for r in (jx, pt) if r)
  lines = [
      f"machine: {machine()}, {args.threads} used per framework, "
      f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
      f"Python {platform.python_version()}, {versions}",
      f"command: `{command}`",
      *(["**--skip_attention: both sides skip the attention products (a diagnostic, not a training "
          "step)**"] if args.skip_attention else []),
      "",
      "| framework | what one step includes | params | warm-up s | s/step (mean of timed) | examples/s "
      "| CPU s/step | peak RSS GiB (built / after steps) |",
      "|---|---|---|---|---|---|---|---|"]
  if jx:
    step = _mean(jx["step_s"])
    mel = _mean(jx["log_mel_s"])
    lines.append(
        f"| JAX (`train.make_train_step`) | log-mel + MAE pass + full pass + heads + {jx['loss_name']} "
        f"+ AdamW | {jx['num_params'] / 1e6:.2f}M | {_mean(jx['warmup_s']):.1f} | {step:.2f} "
        f"({', '.join(f'{s:.2f}' for s in jx['step_s'])}) | {args.batch / step:.2f} | "
        f"{_mean(jx['cpu_s']):.1f} | {_rss(jx)} |")
    lines.append(
        f"| JAX log-mel alone (jitted, same batch) | log-mel | - | - | {mel:.3f} | "
        f"{args.batch / mel:.0f} | - | - |")
    lines.append(
        f"| JAX step minus log-mel (estimate) | as torch | - | - | {step - mel:.2f} | "
        f"{args.batch / (step - mel):.2f} | - | - |")
  if pt:
    step = _mean(pt["step_s"])
    lines.append(
        f"| PyTorch (authors' formulation, plain torch.nn, {pt['attention']} attention) | MAE pass + "
        f"full pass + heads + "
        f"reference Gram + AdamW (spectrograms precomputed) | {pt['num_params'] / 1e6:.2f}M | "
        f"{_mean(pt['warmup_s']) if pt['warmup_s'] else float('nan'):.1f} | {step:.2f} "
        f"({', '.join(f'{s:.2f}' for s in pt['step_s'])}) | {args.batch / step:.2f} | "
        f"{_mean(pt['cpu_s']):.1f} | {_rss(pt)} |")
  if jx and pt:
    jax_step, torch_step, mel = _mean(jx["step_s"]), _mean(pt["step_s"]), _mean(jx["log_mel_s"])
    lines += [
        "",
        f"ratio (examples/s, JAX / PyTorch): {torch_step / jax_step:.2f}x with the JAX log-mel in the "
        f"step, {torch_step / (jax_step - mel):.2f}x without it (same inputs as torch); by CPU seconds "
        f"per step {_mean(pt['cpu_s']) / _mean(jx['cpu_s']):.2f}x.",
        f"batch {args.batch} ({args.accum} micro-batch(es) per step), {args.steps} timed step(s) "
        f"({args.schedule}) after {max(args.warmup, 1)} (JAX) / "
        f"{args.warmup} (torch) warm-up; decoder depth {jx['decoder_depth']}; last losses (a finiteness "
        f"check only: the initialisations differ): JAX {jx['loss']:.4f}, torch {pt['loss']:.4f}."]
  return "\n".join(lines)


def main(argv=None):
  args = parse_args(argv)
  command = shlex.join([os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO))
                        else sys.executable, os.path.relpath(__file__, REPO)] + sys.argv[1:])
  if args.phase != "both":
    _pin_threads(args.threads)
    result = run_jax(args) if args.phase == "jax" else run_torch(args)
    print(_RESULT_TAG + json.dumps(result), flush=True)
    print(report(args, {args.phase: result}, command))
    return
  if args.schedule == "interleaved":
    results = _interleaved(args)
  else:
    results = {phase: _child(args, phase) for phase in ("jax", "torch")}
  print(report(args, results, command))
  if args.json:
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
