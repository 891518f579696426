"""Offline inputs for the quality benchmark: speech synthesized with espeak-ng (16 kHz, mixed with
silence and noise) for Silero VAD, and scikit-image / scikit-learn sample images for MTCNN.
Calibration and held-out sets share no sentence, voice or image."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

SAMPLE_RATE = 16000

# Sentences written for this benchmark (no corpus): first half calibration, second half held out.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Please remember to turn off the lights before you leave the office tonight.",
    "Low rank factorization keeps most of the accuracy with half of the weights.",
    "We measured the latency of every layer on a single core of the machine.",
    "My grandmother grew tomatoes, beans and sunflowers in her small garden.",
    "The train to the airport leaves every twenty minutes from platform four.",
    "Could you read the last paragraph again, a little more slowly this time?",
    "Seven hundred and twenty one people attended the concert on Saturday.",
    "A voice activity detector decides which short frames of audio contain speech.",
    "It started raining just as we reached the top of the hill.",
    "Numbers such as three point one four one five are hard to say quickly.",
    "The library closes at nine, but the reading room stays open until midnight.",
    "She opened the window and listened to the birds singing outside.",
    "Engineers compared the compressed network with the original one frame by frame.",
    "Bring a warm jacket, because the evenings in the mountains are cold.",
    "Thank you for calling; all of our operators are busy at the moment.",
]
CALIBRATION_VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-scotland"]
HELDOUT_VOICES = ["en-029", "en-gb-x-rp+f2", "en-us+m3", "en-gb-x-gbclan"]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _cache_dir() -> pathlib.Path:
    d = pathlib.Path(
        os.environ.get("LRK_QUALITY_CACHE", pathlib.Path(tempfile.gettempdir()) / "lrk_quality")
    )
    d.mkdir(parents=True, exist_ok=True)
    return d


def synthesize(text: str, voice: str, speed: int = 160) -> np.ndarray:
    """espeak-ng -> float32 mono at 16 kHz (cached as .npy)."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    key = f"{abs(hash((text, voice, speed))) % 10**12}_{voice.replace('+', '_')}_{speed}"
    npy = _cache_dir() / f"{key}.npy"
    if npy.exists():
        return np.load(npy)
    wav = _cache_dir() / f"{key}.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    sr, x = wavfile.read(wav)
    x = x.astype(np.float32) / 32768.0
    if sr != SAMPLE_RATE:
        g = np.gcd(sr, SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, sr // g).astype(np.float32)
    np.save(npy, x)
    wav.unlink()
    return x


def _noise(rng, n, kind):
    w = rng.standard_normal(n).astype(np.float32)
    if kind == "white":
        return w
    if kind == "brown":
        b = np.cumsum(w)
        b -= np.convolve(b, np.ones(801) / 801, mode="same")  # drift removed
        return (b / (b.std() + 1e-9)).astype(np.float32)
    # pink-ish: white through a one-pole low-pass mixed with white
    from scipy.signal import lfilter

    return (0.5 * w + lfilter([1.0], [1.0, -0.95], w) * 0.3).astype(np.float32)


def speech_clips(split: str, seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """(N, L) float32 clips at 16 kHz: one sentence per clip at a random offset, the rest silence,
    everything over a noise floor (white / pink / brown, SNR 5-30 dB), plus two noise-only clips
    per voice. split: "calibration" (sentences 0-7, CALIBRATION_VOICES) or "heldout" (sentences
    8-15, HELDOUT_VOICES)."""
    if split == "calibration":
        sentences, voices, seed = SENTENCES[:8], CALIBRATION_VOICES, seed
    elif split == "heldout":
        sentences, voices, seed = SENTENCES[8:], HELDOUT_VOICES, seed + 1
    else:
        raise ValueError(split)
    rng = np.random.default_rng(seed)
    length = int(seconds * SAMPLE_RATE)
    clips = []
    for vi, voice in enumerate(voices):
        for si, text in enumerate(sentences):
            if (si + vi) % 2:  # half the (sentence, voice) pairs: 16 speech clips per split
                continue
            s = synthesize(text, voice, speed=int(rng.integers(140, 190)))[: length - 1600]
            s = s / (np.abs(s).max() + 1e-9) * rng.uniform(0.2, 0.9)
            clip = np.zeros(length, np.float32)
            off = int(rng.integers(0, length - len(s)))
            clip[off : off + len(s)] = s
            noise = _noise(rng, length, ["white", "pink", "brown"][si % 3])
            snr_db = rng.uniform(5, 30)
            p_s = float(np.mean(s**2))
            clip += noise * np.sqrt(p_s / 10 ** (snr_db / 10)) / (noise.std() + 1e-9)
            clips.append(clip)
        for k in range(2):
            noise = _noise(rng, length, ["white", "pink", "brown"][(vi + k) % 3])
            clips.append(noise / (noise.std() + 1e-9) * rng.uniform(0.003, 0.05))
    return np.stack(clips).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------


def lfw_split():
    """skimage.data.lfw_subset(): 100 faces then 100 non-faces, 25x25 grey in [0, 1]. Even
    indices calibration, odd held out. Returns (cal_images, cal_is_face, held_images,
    held_is_face)."""
    from skimage import data

    x = data.lfw_subset().astype(np.float32)
    face = np.arange(200) < 100
    return x[0::2], face[0::2], x[1::2], face[1::2]


def crops_tensor(images: np.ndarray, size: int):
    """(N, 25, 25) grey in [0, 1] -> (N, 3, size, size) RGB, MTCNN-normalized."""
    import torch
    from mtcnn_model import normalize
    from torch.nn import functional as F

    t = torch.from_numpy(images)[:, None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return normalize(t.clamp(0, 1).repeat(1, 3, 1, 1))


def face_grid(images: np.ndarray, cell: int = 72, face: int = 56, cols: int = 5, seed: int = 0):
    """Faces (N, 25, 25) upsampled to face x face pixels and pasted on a grid over a mid-grey
    textured background: an (H, W, 3) float image with N faces."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    rows = (len(images) + cols - 1) // cols
    canvas = 0.5 + 0.05 * rng.standard_normal((rows * cell, cols * cell)).astype(np.float32)
    m = (cell - face) // 2
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * cell + m : r * cell + m + face, c * cell + m : c * cell + m + face] = resize(
            im, (face, face), order=1, anti_aliasing=False
        )
    return np.repeat(np.clip(canvas, 0, 1)[:, :, None], 3, axis=2)


def _rgb(im):
    im = np.asarray(im)
    if im.dtype == np.uint8:
        im = im.astype(np.float32) / 255.0
    if im.ndim == 2:
        im = np.repeat(im[:, :, None], 3, axis=2)
    return np.ascontiguousarray(im[:, :, :3], dtype=np.float32)


def detection_images(split: str):
    """[(name, (H, W, 3) float image in [0, 1])]. Calibration: coffee, chelsea, rocket, camera,
    immunohistochemistry, and a grid of the calibration LFW faces. Held out: astronaut (as is,
    mirrored, at 0.6x, darker), sklearn's china and flower, and a grid of the held-out LFW faces."""
    from skimage import data
    from skimage.transform import rescale

    cal, cal_face, held, held_face = lfw_split()
    if split == "calibration":
        out = [(n, _rgb(getattr(data, n)())) for n in ("coffee", "chelsea", "rocket", "camera")]
        out.append(("immunohistochemistry", _rgb(data.immunohistochemistry())))
        out.append(("lfw_faces_cal", face_grid(cal[cal_face], seed=1)))
        return out
    if split != "heldout":
        raise ValueError(split)
    from sklearn.datasets import load_sample_images

    a = _rgb(data.astronaut())
    out = [
        ("astronaut", a),
        ("astronaut_mirror", np.ascontiguousarray(a[:, ::-1])),
        ("astronaut_0.6x", rescale(a, 0.6, channel_axis=2, anti_aliasing=True).astype(np.float32)),
        ("astronaut_dark", a * 0.55),
    ]
    for name, im in zip(("china", "flower"), load_sample_images().images):
        out.append((name, _rgb(im)))
    out.append(("lfw_faces_heldout", face_grid(held[held_face], seed=2)))
    return out
