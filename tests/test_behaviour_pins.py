"""Behaviour pins: seeded tiny runs of every method, recorded before the methods became objects.

Six training steps and four samples (3 sampler steps) per method on a fixed random data set. The numbers
were recorded with the code as it was before the redesign (string-tested methods); the refactor into
`diffmem.methods` must reproduce them. Change a number only with a bug fix that explains it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config, write_npz
from diffmem.generate import SampleOptions, generate
from diffmem.models.denoiser import load_denoiser
from diffmem.train.loop import train

CASES = {"edm": {}, "ambient-plain": dict(name="ambient", sigma_n=0.5),
         "ambient-compensated": dict(name="ambient", sigma_n=0.5, ambient_weight="compensated"),
         "ambient-capped": dict(name="ambient", sigma_n=0.5, ambient_weight="capped"),
         "masking": dict(name="masking", mask_p=0.3), "noisy-only": dict(name="noisy-only", sigma_n=0.5)}

PINS = {
 "edm": {
  "losses": [
   1.255203127861023,
   1.371180772781372,
   1.1472277641296387,
   1.1333427429199219,
   1.2360975742340088,
   1.1490861177444458
  ],
  "mean": 139.17578125,
  "sum": 35629
 },
 "ambient-plain": {
  "losses": [
   1.4014168977737427,
   1.4871973991394043,
   1.154808759689331,
   1.1432424783706665,
   1.3368408679962158,
   1.2004847526550293
  ],
  "mean": 139.56640625,
  "sum": 35729
 },
 "ambient-compensated": {
  "losses": [
   1.562967300415039,
   1.6074652671813965,
   1.1544532775878906,
   1.1433029174804688,
   2.8579869270324707,
   1.5376701354980469
  ],
  "mean": 139.16796875,
  "sum": 35627
 },
 "ambient-capped": {
  "losses": [
   1.562967300415039,
   1.6074652671813965,
   1.1544532775878906,
   1.1433029174804688,
   1.7528955936431885,
   1.5401766300201416
  ],
  "mean": 139.28125,
  "sum": 35656
 },
 "masking": {
  "losses": [
   0.8510570526123047,
   0.9866412878036499,
   0.9085944294929504,
   0.8856672048568726,
   0.8132222294807434,
   0.6996945142745972
  ],
  "mean": 111.92578125,
  "sum": 28653
 },
 "noisy-only": {
  "losses": [
   1.714290976524353,
   1.5956368446350098,
   0.7823824882507324,
   0.9415122270584106,
   1.5640757083892822,
   1.2288227081298828
  ],
  "mean": 136.95703125,
  "sum": 35061
 }
}


@pytest.mark.parametrize("case", list(CASES))
def test_seeded_run_reproduces_recorded_numbers(case: str, tmp_path: Path) -> None:
    data = str(write_npz(tmp_path / "data.npz"))
    run = tmp_path / case
    train(tiny_config(data, steps=6, **CASES[case]), run, progress=False)
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
    net, cfg, meta = load_denoiser(run)
    img = generate(net, cfg, meta, 4, seed=0, opts=SampleOptions(steps=3), progress=False)
    np.testing.assert_allclose(losses, PINS[case]["losses"], rtol=1e-4)
    assert float(img.astype(np.float64).mean()) == pytest.approx(PINS[case]["mean"], abs=0.05)
