"""Deterministic synthetic dataset in the exact BirdCLEF 2025 competition layout.

Every class gets a procedural "voice": a call family (sweep, trill, buzz, ...) inside a frequency
band that it shares with another class. Training clips hold calls of one primary species (plus
sometimes quieter secondary ones) over background noise; soundscapes are 60 s of noisier
background, distractors and 0-4 calling species, labelled per 5 s window.
All randomness flows from ``seed``: each audio file has its own seed, so output does not
depend on the number of worker processes.
"""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import soundfile as sf
from scipy import fft as sp_fft
from tqdm import tqdm

SR = 32_000
SOUNDSCAPE_SECONDS = 60
WINDOW_SECONDS = 5
MIN_OVERLAP_SECONDS = 0.5
FAMILIES = ("upsweep", "downsweep", "trill", "harmonic", "buzz", "pulses", "warble")
TRAIN_COLUMNS = ["primary_label", "secondary_labels", "type", "filename", "collection", "rating", "url",
                 "latitude", "longitude", "scientific_name", "common_name", "author", "license"]
TAXONOMY_COLUMNS = ["primary_label", "inat_taxon_id", "scientific_name", "common_name", "class_name"]
# Name pools for plausible metadata; bird codes come from adjective[:3] + noun[:3], so prefixes are unique.
_ADJECTIVES = ("Great Common Rufous Black White Scaly Spotted Striped Golden Olive Crested Dusky Pale Lesser Ruddy "
               "Slaty Tawny Bronzy Cinereous Buff").split()
_BIRD_NOUNS = ("Kiskadee Pauraque Antwren Tanager Flycatcher Woodcreeper Manakin Wren Thrush Tinamou Parakeet "
               "Hummingbird Seedeater Becard Elaenia Motmot").split()
_OTHER_NOUNS = {"Amphibia": ["Treefrog", "Toad", "Rainfrog"], "Mammalia": ["Monkey", "Bat", "Agouti"],
                "Insecta": ["Katydid", "Cicada", "Cricket"]}
_SYLLABLES = "ta ri co lu phi gra no mel sca the ru xi po ven dor".split()
_FIRST_NAMES = "Ana Luis Maria Jorge Camila Diego Sofia Andres".split()
_SURNAMES = "Gomez Rodriguez Lopez Martinez Herrera".split()
_LICENSES = ["cc-by-nc-sa 4.0", "cc-by-nc 4.0", "cc-by 4.0", "cc-by-sa 4.0", "cc-by-nc-nd 4.0"]
_CALL_TYPES = ["['song']", "['call']", "['call', 'song']", "['alarm call']", "['flight call']"]


@dataclass(frozen=True)
class SyntheticConfig:
    """Dataset size and difficulty knobs. SNRs are in dB: call RMS over background RMS in the call's band."""

    n_species: int = 20  # total classes, birds + non-birds
    n_non_birds: int = 3
    seed: int = 0
    n_train_soundscapes: int = 20
    n_test_soundscapes: int = 10
    min_clips: int = 5
    max_clips: int = 40
    clip_snr_db: tuple[float, float] = (3.0, 25.0)
    soundscape_snr_db: tuple[float, float] = (0.0, 15.0)
    max_species_per_soundscape: int = 4
    secondary_fraction: float = 0.25
    distractor_prob: float = 0.5  # per soundscape and distractor kind (hum, clicks, unlisted species)
    n_unlisted: int = 6  # species that call in soundscapes but are not in the taxonomy
    max_band_ratio: float = 2.0  # widest f_hi / f_lo of a species band
    species_per_band: int = 2  # classes sharing one frequency band (1 = every class has its own)


@dataclass(frozen=True)
class Voice:
    """Fixed call parameters of one class; ``rate`` is notes/s or modulation Hz depending on family."""

    family: str
    f_lo: float
    f_hi: float
    duration: float
    rate: float
    gap: float  # mean silence between calls, seconds


@dataclass(frozen=True)
class Event:
    """One call placed in a recording; ``snr_db`` is relative to the background in the call's band."""

    species: int
    onset: float
    pitch: float
    stretch: float
    snr_db: float


@dataclass(frozen=True)
class AudioJob:
    """Everything a worker needs to render and write one file, independent of other files."""

    path: Path
    seconds: float
    events: tuple[Event, ...]
    seed: int
    noise_alpha: float  # spectral slope: 1 = pink, 2 = brown
    rumble: float  # wind-like low-frequency rumble level, relative to background
    hum: float  # mains hum level (0 = none)
    clicks_per_s: float
    peak_db: float


# ----------------------------------------------------------------------------- call synthesis
def _phase(freq: np.ndarray) -> np.ndarray:
    return 2 * np.pi * np.cumsum(freq) / SR


def render_call(voice: Voice, rng: np.random.Generator, pitch: float = 1.0, stretch: float = 1.0) -> np.ndarray:
    """Render one call (unit RMS) of ``voice``; ``pitch`` scales the band, ``stretch`` the duration."""
    n = max(int(voice.duration * stretch * SR), 64)
    t = np.arange(n) / SR
    lo, hi = voice.f_lo * pitch, voice.f_hi * pitch
    # Keep synthesis a little inside the band so modulation side lobes stay in it.
    lo, hi = lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    frac = (t * voice.rate) % 1.0  # position inside the current note / modulation cycle
    fam = voice.family
    if fam in ("upsweep", "downsweep", "trill"):
        # Chirps fill 70 % of each note period (trills are just fast, short downward chirps).
        note = np.clip(frac / 0.7, 0, 1)
        ramp = note if fam == "upsweep" else 1 - note
        y = np.sin(_phase(lo * (hi / lo) ** ramp)) * np.sin(np.pi * note) ** 2
    elif fam == "harmonic":
        f0 = (hi - lo) / 3.5  # harmonics of f0 that fall inside the band, with a slow vibrato
        ks = np.arange(np.ceil(lo / f0), np.floor(hi / f0) + 1)
        vib = 1 + 0.01 * np.sin(2 * np.pi * voice.rate * t)
        y = (np.sin(np.outer(ks, _phase(f0 * vib))) / np.sqrt(ks - ks[0] + 1)[:, None]).sum(0)
    elif fam == "buzz":
        y = _band_noise(n, lo, hi, rng) * (0.5 + 0.5 * np.sin(2 * np.pi * voice.rate * t)) ** 2
    elif fam == "pulses":
        # Gabor pulses: a Gaussian envelope of width ~1/bandwidth keeps each pulse inside the band.
        sigma = 1.9 / (2 * np.pi * half)
        y = np.exp(-0.5 * ((frac - 0.5) / (voice.rate * sigma)) ** 2) * np.cos(2 * np.pi * mid * t)
    elif fam == "warble":
        y = np.sin(_phase(mid + 0.9 * half * np.sin(2 * np.pi * voice.rate * t + rng.uniform(0, 2 * np.pi))))
    else:
        raise ValueError(f"unknown call family {fam!r}")
    return _unit(y * _fade(n, int(0.01 * SR)))


def _fade(n: int, ramp: int) -> np.ndarray:
    """Raised-cosine on/off ramps: abrupt edges would leak energy far outside the band."""
    ramp = min(ramp, n // 2)
    env = np.ones(n)
    edge = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    env[:ramp], env[n - ramp:] = edge, edge[::-1]
    return env


def _shaped_noise(n: int, gain: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """White noise filtered in the frequency domain by ``gain(freqs)``. The FFT runs at a fast
    length and is cropped (clip lengths can be prime, making a direct FFT very slow), in float32
    because noise needs no more precision and it halves the cost."""
    m = sp_fft.next_fast_len(n, real=True)
    freqs = sp_fft.rfftfreq(m, 1 / SR).astype(np.float32)
    return sp_fft.irfft(sp_fft.rfft(rng.standard_normal(m, dtype=np.float32)) * gain(freqs), m)[:n]


def _band_noise(n: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    return _shaped_noise(n, lambda f: (f >= lo) & (f <= hi), rng)


# ----------------------------------------------------------------------------- backgrounds
def _background(n: int, job: AudioJob, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS coloured noise + gusty low rumble, then hum and broadband clicks on top."""
    y = _unit(_shaped_noise(n, lambda f: np.maximum(f, 20.0) ** (-job.noise_alpha / 2), rng))
    gusts = np.interp(np.arange(n), np.linspace(0, n, int(n / SR) + 2), rng.uniform(0, 1, int(n / SR) + 2))
    y = y + job.rumble * _unit(_band_noise(n, 20, 250, rng)) * gusts**2
    if job.hum > 0:
        # Whole-Hz fundamentals repeat every second, so render one second and tile it.
        t = np.arange(SR) / SR
        f0 = rng.choice([50, 60, 100, 120])
        second = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 9))
        y = y + job.hum * np.tile(second, n // SR + 1)[:n]
    n_clicks = rng.poisson(job.clicks_per_s * n / SR)
    if n_clicks:
        length = int(0.006 * SR)  # 6 ms decaying noise bursts: broadband like twig snaps or rain
        starts = rng.integers(0, n - length, n_clicks)
        bursts = rng.standard_normal((n_clicks, length)) * np.exp(-np.arange(length) / (0.0015 * SR))
        np.add.at(y, starts[:, None] + np.arange(length), bursts * rng.uniform(2, 8, (n_clicks, 1)))
    return y


def _unit(y: np.ndarray) -> np.ndarray:
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def _band_rms(y: np.ndarray) -> Callable[[float, float], float]:
    """RMS of ``y`` restricted to a frequency band, read off one power spectrum."""
    m = sp_fft.next_fast_len(len(y), real=True)
    cum_power = np.concatenate([[0.0], np.cumsum(np.abs(sp_fft.rfft(y.astype(np.float32), m)) ** 2, dtype=float)])
    freqs, rms = sp_fft.rfftfreq(m, 1 / SR), np.sqrt(np.mean(y**2))
    return lambda lo, hi: rms * np.sqrt(
        (cum_power[np.searchsorted(freqs, hi)] - cum_power[np.searchsorted(freqs, lo)]) / cum_power[-1])


def render_job(job: AudioJob, voices: list[Voice]) -> np.ndarray:
    """Mix background and events, scale to the job's peak level; returns float32 samples.

    Event SNRs are relative to the background inside the call's band: a broadband SNR would make
    high-pitched calls over low-frequency (pink/brown) noise far cleaner than the numbers suggest."""
    rng = np.random.default_rng(job.seed)
    n = max(int(job.seconds * SR), 1)
    y = _background(n, job, rng)
    noise_in_band = _band_rms(y)
    for ev in job.events:
        start, voice = int(ev.onset * SR), voices[ev.species]
        if start >= n:
            continue
        call = render_call(voice, rng, ev.pitch, ev.stretch)[: n - start]
        level = noise_in_band(voice.f_lo * ev.pitch, voice.f_hi * ev.pitch) * 10 ** (ev.snr_db / 20)
        y[start:start + len(call)] += call * level
    return (y * 10 ** (job.peak_db / 20) / np.max(np.abs(y))).astype(np.float32)


def _write_job(args: tuple[AudioJob, list[Voice]]) -> None:
    job, voices = args
    y = render_job(job, voices)
    job.path.parent.mkdir(parents=True, exist_ok=True)
    # Blockwise writes: one huge Vorbis sf.write can crash libsndfile.
    with sf.SoundFile(job.path, "w", SR, 1, format="OGG", subtype="VORBIS") as f:
        for i in range(0, len(y), SR * 10):
            f.write(y[i:i + SR * 10])


# ----------------------------------------------------------------------------- planning
def sample_voices(n: int, cfg: SyntheticConfig, rng: np.random.Generator) -> list[Voice]:
    """Groups of ``species_per_band`` classes share (up to +-7 %) a band but differ in call family,
    and group bands are log-spaced over ~0.7-9 kHz, so neighbouring bands overlap as well:
    telling classes apart needs the call's shape, not just where its energy is."""
    n_bands = -(-n // cfg.species_per_band)
    centres = rng.permutation(np.geomspace(700, 9000, n_bands))
    first_family = rng.integers(len(FAMILIES))
    rate_ranges = {"upsweep": (2, 5), "downsweep": (2, 5), "trill": (12, 25), "harmonic": (4, 8),
                   "buzz": (30, 90), "pulses": (4, 14), "warble": (4, 12)}
    voices = []
    for i in rng.permutation(n):  # consecutive i share a band and get different families
        fam = FAMILIES[(first_family + i) % len(FAMILIES)]
        centre = centres[i // cfg.species_per_band] * rng.uniform(0.93, 1.07)
        ratio = rng.uniform(1.3, cfg.max_band_ratio)
        voices.append(Voice(fam, centre / np.sqrt(ratio), centre * np.sqrt(ratio), rng.uniform(0.6, 2.0),
                            rng.uniform(*rate_ranges[fam]), rng.uniform(0.3, 2.5)))
    return voices


def plan_bout(species: int, voice: Voice, rng: np.random.Generator, start: float, end: float,
              snr_db: tuple[float, float]) -> list[Event]:
    """Calls of one species from ``start`` until ``end`` separated by jittered silences."""
    events, t = [], start
    while t < end:
        ev = Event(species, round(t, 4), rng.uniform(0.95, 1.05), rng.uniform(0.85, 1.15), rng.uniform(*snr_db))
        events.append(ev)
        t += voice.duration * ev.stretch + voice.gap * rng.uniform(0.5, 2.0)
    return events


def _clip_seconds(rng: np.random.Generator) -> float:
    """Mostly 3-15 s, with a few sub-second snippets and a few > 60 s recordings."""
    kind = rng.random()
    if kind < 0.05:
        return rng.uniform(0.5, 1.0)
    if kind > 0.96:
        return rng.uniform(60, 80)
    return float(np.clip(rng.lognormal(np.log(7), 0.6), 1.5, 40))


def window_labels(events: list[Event], voices: list[Voice], n_classes: int) -> np.ndarray:
    """(12, n_classes) 0/1 matrix: a class is positive in a 5 s window if one of its calls
    overlaps it by >= 0.5 s (or, for calls shorter than 0.5 s, lies entirely inside it)."""
    labels = np.zeros((SOUNDSCAPE_SECONDS // WINDOW_SECONDS, n_classes), dtype=np.int64)
    starts = np.arange(0, SOUNDSCAPE_SECONDS, WINDOW_SECONDS)
    for ev in events:
        if ev.species >= n_classes:  # unlisted distractor species
            continue
        end = min(ev.onset + voices[ev.species].duration * ev.stretch, SOUNDSCAPE_SECONDS)
        overlap = np.minimum(end, starts + WINDOW_SECONDS) - np.maximum(ev.onset, starts)
        labels[overlap >= min(MIN_OVERLAP_SECONDS, end - ev.onset), ev.species] = 1
    return labels


# ----------------------------------------------------------------------------- metadata
def _make_taxonomy(cfg: SyntheticConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Birds get eBird-like codes built from their common name (``Great Kiskadee`` -> ``grekis``);
    non-birds a numeric iNaturalist id, as in the real competition."""
    n_birds = cfg.n_species - cfg.n_non_birds
    if not 0 <= n_birds <= len(_ADJECTIVES) * len(_BIRD_NOUNS) or cfg.n_non_birds < 0:
        raise ValueError(f"unsupported n_species={cfg.n_species}, n_non_birds={cfg.n_non_birds}")
    rows = []
    for k in rng.choice(len(_ADJECTIVES) * len(_BIRD_NOUNS), n_birds, replace=False):
        adj, noun = _ADJECTIVES[k // len(_BIRD_NOUNS)], _BIRD_NOUNS[k % len(_BIRD_NOUNS)]
        rows.append(((adj[:3] + noun[:3]).lower(), int(rng.integers(1_000, 999_999)), _latin(rng),
                     f"{adj} {noun}", "Aves"))
    ids = rng.choice(np.arange(40_000, 1_600_000), cfg.n_non_birds, replace=False)
    for i, taxon in enumerate(ids):
        cls = list(_OTHER_NOUNS)[i % len(_OTHER_NOUNS)]
        name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_OTHER_NOUNS[cls])}"
        rows.append((str(taxon), int(taxon), _latin(rng), name, cls))
    tax = pd.DataFrame(rows, columns=TAXONOMY_COLUMNS)
    return tax.sort_values("primary_label").reset_index(drop=True)


def _latin(rng: np.random.Generator) -> str:
    genus = "".join(rng.choice(_SYLLABLES, 3)).capitalize()
    return f"{genus} {''.join(rng.choice(_SYLLABLES, 2))}{rng.choice(['us', 'a', 'is'])}"


def _clip_row(label: str, is_bird: bool, secondary: list[str], clip_id: int, author: str,
              rng: np.random.Generator) -> dict:
    """One train.csv row with plausible provenance fields (only XC clips carry a rating)."""
    collection = rng.choice(["XC", "iNat", "CSA"], p=[0.65, 0.28, 0.07] if is_bird else [0.15, 0.85, 0.0])
    urls = {"XC": f"https://xeno-canto.org/{clip_id}",
            "iNat": f"https://static.inaturalist.org/sounds/{clip_id}.m4a",
            "CSA": f"https://colecciones.humboldt.org.co/sonidos/CSA{clip_id}"}
    is_xc = collection == "XC"
    return {"primary_label": label, "secondary_labels": str(secondary or [""]),
            "type": rng.choice(_CALL_TYPES) if is_xc else "['']",
            "filename": f"{label}/{collection}{clip_id}.ogg", "collection": collection,
            "rating": float(rng.choice(np.arange(0, 5.5, 0.5))) if is_xc else 0.0, "url": urls[collection],
            "latitude": round(rng.normal(5.0, 3.0), 4), "longitude": round(rng.normal(-74.0, 3.0), 4),
            "author": author, "license": rng.choice(_LICENSES)}


def _plan_clips(root: Path, tax: pd.DataFrame, voices: list[Voice], cfg: SyntheticConfig,
                rng: np.random.Generator) -> tuple[pd.DataFrame, list[AudioJob]]:
    """Long-tailed clip counts per class; ~``secondary_fraction`` of clips carry quieter extra species."""
    n = len(tax)
    ranks = rng.permutation(n) + 1
    counts = np.clip(np.round(cfg.max_clips * ranks**-0.8), cfg.min_clips, cfg.max_clips).astype(int)
    authors = [f"{a} {b}" for a in _FIRST_NAMES for b in _SURNAMES]  # 40 recordists, shared across clips
    author_p = 1 / np.arange(1, len(authors) + 1)
    labels, rows, jobs, ids = tax["primary_label"].tolist(), [], [], rng.permutation(900_000)[: counts.sum()]
    for cls, clip_id in zip(np.repeat(np.arange(n), counts), ids + 100_000):
        others = [c for c in range(n) if c != cls]
        extra = rng.choice(others, rng.integers(1, 3), replace=False).tolist() \
            if n > 1 and rng.random() < cfg.secondary_fraction else []
        row = _clip_row(labels[cls], tax["class_name"][cls] == "Aves", [labels[c] for c in extra],
                        int(clip_id), authors[rng.choice(len(authors), p=author_p / author_p.sum())], rng)
        rows.append(row | {"scientific_name": tax["scientific_name"][cls], "common_name": tax["common_name"][cls]})
        seconds, snr = _clip_seconds(rng), rng.uniform(*cfg.clip_snr_db)
        events = plan_bout(cls, voices[cls], rng, rng.uniform(0, 0.3), seconds, (snr - 2, snr + 2))
        for c in extra:  # secondary species: 6-12 dB below the primary, yet never below 0 dB in band
            events += plan_bout(c, voices[c], rng, rng.uniform(0, seconds), seconds,
                                (max(snr - 12, 0.0), max(snr - 6, 3.0)))
        jobs.append(AudioJob(root / "train_audio" / row["filename"], seconds, tuple(events),
                             int(rng.integers(2**62)), rng.uniform(1, 2), rng.uniform(0, 0.5), 0.0, 0.0,
                             rng.uniform(-20, -1)))
    train = pd.DataFrame(rows)[TRAIN_COLUMNS].sort_values(["primary_label", "filename"])
    return train.reset_index(drop=True), jobs


def _plan_soundscape(path: Path, voices: list[Voice], n_classes: int, cfg: SyntheticConfig,
                     rng: np.random.Generator) -> AudioJob:
    """60 s of noisier background with 0-4 labelled species and, each with ``distractor_prob``,
    mains hum, broadband clicks and 1-2 unlisted species (voices past ``n_classes``, never labelled)."""
    n_present = min(rng.integers(0, cfg.max_species_per_soundscape + 1), n_classes)
    callers = rng.choice(n_classes, n_present, replace=False).tolist()
    if len(voices) > n_classes and rng.random() < cfg.distractor_prob:
        callers += rng.choice(np.arange(n_classes, len(voices)), min(rng.integers(1, 3), len(voices) - n_classes),
                              replace=False).tolist()
    events: list[Event] = []
    for cls in callers:
        for _ in range(rng.integers(1, 4)):
            start = rng.uniform(0, SOUNDSCAPE_SECONDS - 1)
            end = min(start + rng.uniform(2, 12), SOUNDSCAPE_SECONDS)
            events += plan_bout(int(cls), voices[cls], rng, start, end, cfg.soundscape_snr_db)
    hum = rng.uniform(0.1, 0.5) if rng.random() < cfg.distractor_prob else 0.0
    clicks = rng.uniform(0.2, 2.0) if rng.random() < cfg.distractor_prob else 0.0
    return AudioJob(path, SOUNDSCAPE_SECONDS, tuple(events), int(rng.integers(2**62)), rng.uniform(0.5, 2),
                    rng.uniform(0.3, 1.5), hum, clicks, rng.uniform(-20, -3))


def _soundscape_names(count: int, rng: np.random.Generator) -> list[str]:
    """Unique ``H02_20230420_074000``-style stems (site_date_time)."""
    names: set[str] = set()
    while len(names) < count:
        day = np.datetime64("2023-04-01") + rng.integers(0, 90)
        names.add(f"H{rng.integers(1, 11):02d}_{str(day).replace('-', '')}_"
                  f"{rng.integers(0, 24):02d}{10 * rng.integers(0, 6):02d}00")
    return sorted(names)


def _label_frame(stems: list[str], jobs: list[AudioJob], voices: list[Voice], labels: list[str]) -> pd.DataFrame:
    """Submission-format labels: row_id ``<stem>_<end second>`` then one 0/1 column per class."""
    mats = [window_labels(list(job.events), voices, len(labels)) for job in jobs]
    ends = range(WINDOW_SECONDS, SOUNDSCAPE_SECONDS + 1, WINDOW_SECONDS)
    frame = pd.DataFrame(np.concatenate(mats) if mats else np.zeros((0, len(labels)), int), columns=labels)
    frame.insert(0, "row_id", [f"{stem}_{end}" for stem in stems for end in ends])
    return frame


# ----------------------------------------------------------------------------- entry point
def generate_dataset(root: str | Path, n_species: int = 20, n_non_birds: int = 3, seed: int = 0,
                     n_train_soundscapes: int = 20, n_test_soundscapes: int = 10, *, workers: int = 2,
                     progress: bool = False, **knobs) -> Path:
    """Write a full BirdCLEF-2025-layout dataset under ``root`` and return ``root``.

    ``knobs`` are extra :class:`SyntheticConfig` fields (SNR ranges, clip counts, ...).
    ``workers`` and ``progress`` only affect speed and display, never the output.
    """
    cfg = SyntheticConfig(n_species, n_non_birds, seed, n_train_soundscapes, n_test_soundscapes, **knobs)
    root = Path(root)
    rng = np.random.default_rng(cfg.seed)
    tax = _make_taxonomy(cfg, rng)
    labels = tax["primary_label"].tolist()
    voices = sample_voices(len(labels) + cfg.n_unlisted, cfg, rng)  # unlisted voices come last
    train, jobs = _plan_clips(root, tax, voices, cfg, rng)
    stems = _soundscape_names(cfg.n_train_soundscapes + cfg.n_test_soundscapes, rng)
    test = set(rng.choice(stems, cfg.n_test_soundscapes, replace=False).tolist())
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        part = [s for s in stems if (s in test) == (split == "test")]
        scapes = [_plan_soundscape(root / f"{split}_soundscapes" / f"{s}.ogg", voices, len(labels), cfg, rng)
                  for s in part]
        frame = _label_frame(part, scapes, voices, labels)
        frame.to_csv(root / f"{split}_soundscapes_labels.csv", index=False)
        jobs += scapes
    _write_audio(jobs, voices, workers, progress)
    train.to_csv(root / "train.csv", index=False)
    submission = frame[["row_id"]].assign(**{label: 1.0 / len(labels) for label in labels})
    submission.to_csv(root / "sample_submission.csv", index=False)
    tax.to_csv(root / "taxonomy.csv", index=False)  # written last: marks a complete dataset
    return root


def _write_audio(jobs: list[AudioJob], voices: list[Voice], workers: int, progress: bool) -> None:
    """Render all files in a process pool, longest first so the workers stay balanced."""
    args = [(job, voices) for job in sorted(jobs, key=lambda j: -j.seconds)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in tqdm(pool.imap_unordered(_write_job, args), total=len(args), unit="file",
                      desc="writing audio", disable=not progress):
            pass
