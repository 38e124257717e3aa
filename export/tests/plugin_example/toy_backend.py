"""A third-party backend and scheme, as a plugin module (MOBILELLM_PLUGINS=toy_backend): the test
of what adding a backend and a scheme touches. The artifact is the model's weights in safetensors
with its architecture in the header; the runtime is eager PyTorch."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mobilellm.export.base import Backend, ExportResult, Session, register
from mobilellm.quant import schemes
from mobilellm.quant.schemes import Scheme, Thresholds

TOY = schemes.register(Scheme("toy16", "fp16", compute="fp16", vs_fp32=Thresholds(0.95, 0.999),
                              aliases=("toy-half",)))


def _export(model, cfg, out: Path, steps) -> ExportResult:
    from safetensors.torch import save_file
    with steps.step("write weights"):
        sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items() if "cache" not in k}
        save_file(sd, str(out), metadata={"args": json.dumps(dataclasses.asdict(model.args)),
                                          "max_seq_len": str(cfg.max_seq_len)})
    return ExportResult(quant={"format": "fp16 safetensors"}, facts={"runtime": {"name": "eager torch"}})


class ToySession(Session):
    def __init__(self, path, manifest):
        self.path, self.model = Path(path), None

    def load(self):
        from safetensors import safe_open
        with safe_open(str(self.path), "pt") as f:
            self.meta, self.sd = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    def init(self):
        from mobilellm.models.config import ModelArgs
        from mobilellm.models.generate import EagerRunner
        from mobilellm.models.model import MobileLLM
        args = ModelArgs(**json.loads(self.meta["args"]))
        model = MobileLLM(args, max_seq_len=int(self.meta["max_seq_len"]))
        model.load_state_dict({k: v.float() for k, v in self.sd.items()}, strict=False)
        self.runner = EagerRunner(model.eval().requires_grad_(False))
        self.max_seq_len, self.vocab_size = self.runner.max_seq_len, self.runner.vocab_size

    def forward(self, ids, start_pos):
        return self.runner.forward(ids, start_pos)

    def reset(self):
        self.runner.reset()


register(Backend(name="toy", suffix=".toy", schemes={"toy16": "safetensors fp16 (this test's quantizer)"},
                 summary="test plugin: fp16 safetensors run by eager PyTorch", export=_export, open=ToySession,
                 default_scheme="toy16", closest={"w8a8": ("toy16", "the toy backend has no integer kernels")}))
