"""Silero VAD 16 kHz (pip silero-vad 6.2.3) re-implemented as a plain torch nn.Module whose
factorizable layers are the types ``lrkernels.torch.compress`` handles, loaded from the weights the
package ships.

Weights: by default from the package's TorchScript model ``silero_vad/data/silero_vad.jit`` (what
``silero_vad.load_silero_vad()`` returns; its ONNX exports agree with it to 1.5e-5). The package
also ships ``silero_vad_16k.safetensors`` (for its tinygrad port) with the same layer shapes but
DIFFERENT values: in 6.2.3 they do not reproduce the jit/ONNX models (probabilities differ by up
to 0.54 on speech), so ``pretrained(source="safetensors")`` is kept only for comparison.

The forward follows the package's TorchScript model (``silero_vad.jit``: ``._model.code`` and its
submodules' code): audio is cut into 512-sample chunks, each preceded by the previous chunk's last
64 samples (zeros before the first); per chunk, reflect-pad 64 on the right, STFT as a fixed
conv1d basis (258, 1, 256) with hop 128 -> 4 frames, magnitude of 129 bins; four Conv1d k=3 pad 1
(strides 1, 2, 2, 1) each followed by ReLU; the LSTMCell (128 -> 128) carries (h, c) from chunk
to chunk; ReLU, a 1x1 conv 128 -> 1, sigmoid (mean over the single frame left).

Differences in form (not in function): the Conv1d layers are nn.Conv2d with kernel (1, 3) on
(N, C, 1, T) (compress factorizes nn.Conv2d, not Conv1d), the LSTMCell run chunk by chunk is one
nn.LSTM over the sequence of chunks, and the final 1x1 conv is an nn.Linear(128, 1).
"""

from __future__ import annotations

import importlib.util
import pathlib
import warnings

import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE = 16000
CHUNK = 512
CONTEXT = 64


def _load_jit(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
        return torch.jit.load(str(path), map_location="cpu")


def package_data_dir() -> pathlib.Path | None:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(spec.submodule_search_locations[0]) / "data"


class SileroVAD(nn.Module):
    """forward(audio (N, L) float at 16 kHz) -> speech probability per 512-sample chunk
    (N, L // 512); a trailing partial chunk is dropped."""

    def __init__(self):
        super().__init__()
        self.register_buffer("stft_basis", torch.zeros(258, 1, 256))
        self.conv1 = nn.Conv2d(129, 128, (1, 3), stride=(1, 1), padding=(0, 1))
        self.conv2 = nn.Conv2d(128, 64, (1, 3), stride=(1, 2), padding=(0, 1))
        self.conv3 = nn.Conv2d(64, 64, (1, 3), stride=(1, 2), padding=(0, 1))
        self.conv4 = nn.Conv2d(64, 128, (1, 3), stride=(1, 1), padding=(0, 1))
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        self.final = nn.Linear(128, 1)

    @classmethod
    def pretrained(cls, source: str = "jit") -> SileroVAD:
        data = package_data_dir()
        if data is None:
            raise ImportError("silero-vad is not installed: pip install --no-deps silero-vad")
        if source == "jit":
            jit = _load_jit(data / "silero_vad.jit")
            named = {**dict(jit.named_parameters()), **dict(jit.named_buffers())}
            p = "_model."
            sd = {"stft_conv.weight": named[p + "stft.forward_basis_buffer"]}
            for i in range(4):
                sd[f"conv{i + 1}.weight"] = named[f"{p}encoder.{i}.reparam_conv.weight"]
                sd[f"conv{i + 1}.bias"] = named[f"{p}encoder.{i}.reparam_conv.bias"]
            for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                sd[f"lstm_cell.{k}"] = named[f"{p}decoder.rnn.{k}"]
            sd["final_conv.weight"] = named[p + "decoder.decoder.2.weight"]
            sd["final_conv.bias"] = named[p + "decoder.decoder.2.bias"]
        elif source == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(data / "silero_vad_16k.safetensors"))
        else:
            raise ValueError(f"source must be 'jit' or 'safetensors', got {source!r}")
        m = cls()
        with torch.no_grad():
            m.stft_basis.copy_(sd["stft_conv.weight"])
            for i in range(1, 5):
                conv = getattr(m, f"conv{i}")
                conv.weight.copy_(sd[f"conv{i}.weight"].unsqueeze(2))
                conv.bias.copy_(sd[f"conv{i}.bias"])
            m.lstm.weight_ih_l0.copy_(sd["lstm_cell.weight_ih"])
            m.lstm.weight_hh_l0.copy_(sd["lstm_cell.weight_hh"])
            m.lstm.bias_ih_l0.copy_(sd["lstm_cell.bias_ih"])
            m.lstm.bias_hh_l0.copy_(sd["lstm_cell.bias_hh"])
            m.final.weight.copy_(sd["final_conv.weight"].reshape(1, 128))
            m.final.bias.copy_(sd["final_conv.bias"])
        return m.eval()

    @staticmethod
    def chunks(audio: torch.Tensor) -> torch.Tensor:
        """(N, L) -> (N, T, 64 + 512): each chunk with the 64 samples before it."""
        n, length = audio.shape
        t = length // CHUNK
        x = F.pad(audio[:, : t * CHUNK], (CONTEXT, 0))
        return x.unfold(1, CHUNK + CONTEXT, CHUNK)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(N, L) -> the encoder's output per chunk, (N, T, 128)."""
        x = self.chunks(audio)
        n, t, w = x.shape
        x = F.pad(x.reshape(n * t, 1, w), (0, CONTEXT), mode="reflect")
        spec = F.conv1d(x, self.stft_basis, stride=128)
        mag = torch.sqrt(spec[:, :129] ** 2 + spec[:, 129:] ** 2)  # (n t, 129, 4)
        h = mag.unsqueeze(2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            h = F.relu(conv(h))
        return h.reshape(n, t, 128)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.features(audio))
        return torch.sigmoid(self.final(F.relu(h))).squeeze(-1)


def jit_probabilities(audio: torch.Tensor) -> torch.Tensor:
    """The package's own TorchScript model run chunk by chunk, (N, L) -> (N, L // 512)."""
    model = _load_jit(package_data_dir() / "silero_vad.jit")
    model.eval()
    model.reset_states()
    out = []
    with torch.no_grad():
        for i in range(audio.shape[1] // CHUNK):
            out.append(model(audio[:, i * CHUNK : (i + 1) * CHUNK], SAMPLE_RATE))
    return torch.cat(out, dim=1)
