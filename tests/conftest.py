import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _shared_data_dir():
  return pathlib.Path(os.environ.get("ACULA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
  """The real recordings of ../shared/data, or a skip that says where they were looked for."""
  path = _shared_data_dir()
  if not path.is_dir():
    pytest.skip(f"real data not found at {path} (set ACULA_SHARED_DATA)")
  return path
