"""Audio I/O for training: decode every file once into a memory-mapped cache, or read crops on the fly.

A cache folder (one per data root, see `data.cache_dir`) holds
  audio.npy      every readable clip back to back: 1-D float16, mono, `sample_rate` Hz; opened with
                 np.load(mmap_mode="r"), so epochs and later runs read crops without decoding
  index.csv      filename, start, length (in samples) of each readable clip
  bad_files.csv  filename, reason of each listed file that could not be used (missing, empty, corrupt, NaN...)
  manifest.json  hash of the sources (relative paths, sizes, mtimes) and of the decoding settings;
                 written last, so a missing or different manifest means "rebuild"
Precision: float16 keeps 11 significant bits, |x - x16| <= 2**-11 |x| (a relative error of -66 dB,
far below what a log-mel front end resolves), with no clipping above 1.0; half the size of float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from filelock import FileLock
from tqdm.auto import tqdm

CACHE_DTYPE = np.float16
CACHE_VERSION = 1  # bump when the file format or the decoding changes

log = logging.getLogger(__name__)


def resample(audio: np.ndarray, file_rate: int, sample_rate: int) -> np.ndarray:
    """soxr "HQ", as librosa.resample(res_type="soxr_hq") computes it, without librosa's seconds of first-call
    start-up, which every decoding process would pay again."""
    return soxr.resample(audio, file_rate, sample_rate, quality="HQ")


def load_audio(path: Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Decode to mono float32 at sample_rate: channels averaged, other rates soxr-resampled.

    Reads at most the first `max_seconds`. Raises ValueError on empty or non-finite audio.
    """
    with sf.SoundFile(path) as file:
        frames = -1 if max_seconds is None else int(max_seconds * file.samplerate)
        audio = file.read(frames, dtype="float32", always_2d=True).mean(axis=1)  # [T]
        file_rate = file.samplerate
    if audio.size == 0:
        raise ValueError("no samples")
    if not np.isfinite(audio).all():
        raise ValueError("non-finite samples (NaN or inf)")
    if file_rate != sample_rate:
        audio = resample(audio, file_rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


def fit_length(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """audio[start:start+length] as float32, zero-padded at the end when the clip is shorter."""
    piece = np.asarray(audio[start : start + length], dtype=np.float32)
    if piece.shape[0] < length:
        piece = np.pad(piece, (0, length - piece.shape[0]))
    return piece


class PackedAudio:
    """Clips stored back to back in one flat array, memory-mapped from `path` on first use.

    Pickles without the array: DataLoader workers re-open the file instead of receiving a copy of the cache.
    """

    def __init__(self, starts: np.ndarray, lengths: np.ndarray, path: Path, data: np.ndarray | None = None) -> None:
        self.starts, self.lengths = np.asarray(starts, np.int64), np.asarray(lengths, np.int64)
        self.path, self._data = path, data  # data: the map already opened by the set this one was taken from

    @property
    def data(self) -> np.ndarray:
        if self._data is None:
            self._data = np.load(self.path, mmap_mode="r")
        return self._data

    def __len__(self) -> int:
        return len(self.lengths)

    def num_samples(self, index: int) -> int:
        return int(self.lengths[index])

    def crop(self, index: int, start: int, length: int) -> np.ndarray:
        """Samples [start, start+length) of clip `index` as float32 [length], zero-padded past its end."""
        begin = int(self.starts[index])
        return fit_length(self.data[begin : begin + int(self.lengths[index])], start, length)

    def take(self, indices: Sequence[int] | np.ndarray) -> PackedAudio:
        """A subset sharing the same array (no copy)."""
        return PackedAudio(self.starts[indices], self.lengths[indices], self.path, self._data)

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_data": None}


class FileAudio:
    """On-the-fly decoding (data.cache=false): each crop seeks into its file and decodes only that part."""

    def __init__(self, paths: Sequence[Path], file_rates: Sequence[int], lengths: Sequence[int],
                 sample_rate: int) -> None:
        self.paths, self.file_rates, self.lengths = list(paths), list(file_rates), list(lengths)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def num_samples(self, index: int) -> int:
        return self.lengths[index]

    def crop(self, index: int, start: int, length: int) -> np.ndarray:
        rate, available = self.file_rates[index], min(length, max(self.lengths[index] - start, 0))
        with sf.SoundFile(self.paths[index]) as file:
            file.seek(start * rate // self.sample_rate)
            audio = file.read(-(-available * rate // self.sample_rate), dtype="float32", always_2d=True).mean(axis=1)
        if rate != self.sample_rate and audio.size:
            audio = resample(audio, rate, self.sample_rate)
        # NaN samples cannot be found without decoding everything up front; silence them instead.
        return fit_length(np.nan_to_num(audio[:available], nan=0.0, posinf=0.0, neginf=0.0), 0, length)

    def take(self, indices: Sequence[int] | np.ndarray) -> FileAudio:
        return FileAudio([self.paths[i] for i in indices], [self.file_rates[i] for i in indices],
                         [self.lengths[i] for i in indices], self.sample_rate)


def _precheck(path: Path) -> str:
    """Why a file is unusable before opening it ("" when it may be fine)."""
    if not path.is_file():
        return "missing"
    return "empty file (0 bytes)" if path.stat().st_size == 0 else ""


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".replace("\n", " ")


def _decode(path: Path, sample_rate: int, max_seconds: float | None) -> tuple[np.ndarray | None, str]:
    """(float16 audio, "") or (None, why it is unusable). Runs in a worker process."""
    if reason := _precheck(path):
        return None, reason
    try:
        return load_audio(path, sample_rate, max_seconds).astype(CACHE_DTYPE), ""
    except Exception as error:  # one bad file must never stop a build over thousands of others
        return None, _reason(error)


def decode_parallel(paths: Sequence[Path], sample_rate: int, max_seconds: float | None,
                    workers: int | None) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """(index, audio or None, reason) in completion order, decoded by a process pool over all cores."""
    pool = ProcessPoolExecutor(max_workers=workers)  # None = one per core
    try:
        futures = {pool.submit(_decode, Path(p), sample_rate, max_seconds): i for i, p in enumerate(paths)}
        for future in tqdm(as_completed(futures), total=len(futures), desc="caching audio", unit="file"):
            yield futures.pop(future), *future.result()  # pop: the future holds its audio until dropped
    finally:
        pool.shutdown(cancel_futures=True)


def source_hash(audio_dir: Path, filenames: Sequence[str], sample_rate: int, max_seconds: float | None) -> str:
    """Changes when any listed file appears, disappears or changes size / mtime, or the decoding settings change."""
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, sample_rate, max_seconds]).encode())
    for name in sorted(filenames):
        path = audio_dir / name
        stat = path.stat() if path.is_file() else None
        digest.update(f"{name}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _check_disk_space(folder: Path, audio_dir: Path, filenames: Sequence[str], sample_rate: int,
                      max_seconds: float | None) -> None:
    """Fail before hours of decoding rather than at 'No space left on device'."""
    seconds = 0.0
    for name in filenames:
        try:
            info = sf.info(str(audio_dir / name))
            seconds += info.duration if max_seconds is None else min(info.duration, max_seconds)
        except Exception:  # unreadable headers are reported by the build itself
            continue
    needed = seconds * sample_rate * np.dtype(CACHE_DTYPE).itemsize
    free = shutil.disk_usage(folder).free
    log.info("audio cache: %.1f h of audio, about %.2f GB in %s", seconds / 3600, needed / 1e9, folder)
    if needed > 0.95 * free:
        raise OSError(f"the audio cache needs about {needed / 1e9:.1f} GB but {folder} has {free / 1e9:.1f} GB free; "
                      f"set data.cache_dir elsewhere, data.max_seconds (e.g. 60) or data.cache=false")


def _write_cache(folder: Path, audio_dir: Path, filenames: Sequence[str], sample_rate: int,
                 max_seconds: float | None, workers: int | None) -> None:
    """Decode every file into folder/audio.npy; write index.csv and bad_files.csv."""
    starts, lengths = np.full(len(filenames), -1, np.int64), np.zeros(len(filenames), np.int64)
    reasons = [""] * len(filenames)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(CACHE_DTYPE)), "fortran_order": False}
    tmp = folder / "audio.npy.tmp"
    with open(tmp, "wb") as out:
        np.lib.format.write_array_header_1_0(out, header | {"shape": (0,)})
        data_start, written = out.tell(), 0
        paths = [audio_dir / name for name in filenames]
        for i, audio, reason in decode_parallel(paths, sample_rate, max_seconds, workers):
            if audio is None:
                reasons[i] = reason
                continue
            starts[i], lengths[i] = written, len(audio)
            out.write(audio.tobytes())
            written += len(audio)
        # The total is known only now; numpy pads .npy headers so that the shape can be rewritten in place.
        out.seek(0)
        np.lib.format.write_array_header_1_0(out, header | {"shape": (written,)})
        if out.tell() != data_start:
            raise RuntimeError("the .npy header changed size; the cache format needs updating for this numpy")
    os.replace(tmp, folder / "audio.npy")
    table = pd.DataFrame({"filename": filenames, "start": starts, "length": lengths, "reason": reasons})
    ok = table["start"] >= 0
    table.loc[ok, ["filename", "start", "length"]].to_csv(folder / "index.csv", index=False)
    table.loc[~ok, ["filename", "reason"]].to_csv(folder / "bad_files.csv", index=False)


def cached_audio(folder: Path, audio_dir: Path, filenames: Sequence[str], sample_rate: int,
                 max_seconds: float | None = None, workers: int | None = None
                 ) -> tuple[PackedAudio, list[str], dict[str, str]]:
    """The cached clips of `filenames` (relative to audio_dir); the cache is (re)built first when stale.

    Returns (clips, the readable filenames they align with, {unusable filename: reason}).
    A file lock lets several processes (DDP ranks, parallel runs) share one build.
    """
    folder.mkdir(parents=True, exist_ok=True)
    filenames = sorted(set(filenames))
    key = source_hash(audio_dir, filenames, sample_rate, max_seconds)
    manifest = folder / "manifest.json"
    with FileLock(str(folder / ".lock")):
        if not manifest.is_file() or json.loads(manifest.read_text()).get("hash") != key:
            log.info("building the audio cache of %d files in %s", len(filenames), folder)
            manifest.unlink(missing_ok=True)  # an interrupted rebuild must not look complete
            _check_disk_space(folder, audio_dir, filenames, sample_rate, max_seconds)
            _write_cache(folder, audio_dir, filenames, sample_rate, max_seconds, workers)
            manifest.write_text(json.dumps({"hash": key, "version": CACHE_VERSION, "sample_rate": sample_rate,
                                            "max_seconds": max_seconds, "dtype": np.dtype(CACHE_DTYPE).name,
                                            "files": len(filenames)}, indent=1))
    index = pd.read_csv(folder / "index.csv", dtype={"filename": str})
    bad = pd.read_csv(folder / "bad_files.csv", dtype={"filename": str, "reason": str})
    clips = PackedAudio(index["start"].to_numpy(), index["length"].to_numpy(), folder / "audio.npy")
    return clips, index["filename"].tolist(), dict(zip(bad["filename"], bad["reason"]))


def _probe(path: Path) -> tuple[int, int] | str:
    """(sample rate, frames) from the header, or why the file is unusable."""
    if reason := _precheck(path):
        return reason
    try:
        info = sf.info(str(path))
    except Exception as error:  # any unreadable header: skip the file, keep the run
        return _reason(error)
    return (info.samplerate, info.frames) if info.frames > 0 else "no samples"


def file_audio(audio_dir: Path, filenames: Sequence[str], sample_rate: int, max_seconds: float | None = None
               ) -> tuple[FileAudio, list[str], dict[str, str]]:
    """On-the-fly clips of `filenames`, after a header check of each file; same returns as cached_audio."""
    readable, rates, lengths, bad = [], [], [], {}
    cap = np.inf if max_seconds is None else int(max_seconds * sample_rate)
    for name in tqdm(sorted(set(filenames)), desc="checking audio headers", unit="file"):
        probe = _probe(audio_dir / name)
        if isinstance(probe, str):
            bad[name] = probe
            continue
        readable.append(name)
        rates.append(probe[0])
        lengths.append(int(min(probe[1] * sample_rate // probe[0], cap)))
    return FileAudio([audio_dir / n for n in readable], rates, lengths, sample_rate), readable, bad
