"""Where the kiosk's frames come from: a camera, a video file, a folder of
images or a stream URL, read on a capture thread of their own.

Owns parsing `--source`, opening sources with OpenCV, the capture thread
(which keeps only the newest frame of a live source, so a slow search never
builds a backlog), end of stream, and reconnecting a lost camera or stream
every few seconds. Problems become `SourceStatus` values in plain words,
never exceptions out of the thread. Must not import torch, open_clip, onnx
or textual.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np

from edge_search.core.catalog import IMAGE_SUFFIXES
from edge_search.errors import EdgeSearchError, ImageError
from edge_search.core.images import load_image

RETRY_S = 3.0
# A folder plays as a slide show on screen: long enough to read the results.
FOLDER_INTERVAL_S = 2.0
# Files without a usable frame rate in their header play at this rate.
FALLBACK_FPS = 25.0

STATES = ("starting", "live", "lost", "ended", "failed")


class SourceError(EdgeSearchError):
    """A source cannot be used at all: a missing file, no camera at start."""


@dataclass(frozen=True)
class Frame:
    index: int  # position in the source: frame number, or image number in a folder
    image: np.ndarray  # RGB uint8, H x W x 3
    captured: float = 0.0  # time.monotonic() when read
    wall: float = 0.0  # time.time() when read, for timestamps people read
    still: bool = False  # a photo from a folder: complete on its own, nothing to wait for
    source: str = ""  # where it came from: the image file of a folder, the video file, "camera 0", the URL


@dataclass(frozen=True)
class SourceStatus:
    state: str  # one of STATES
    message: str  # what happened, in plain words for a person
    retry_s: float | None = None  # set while the capture thread retries by itself

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"source state must be one of {STATES}, got {self.state!r}")

    @property
    def text(self) -> str:
        """The message and, when it applies, what happens next."""
        return self.message + (f" — retrying every {self.retry_s:g} s" if self.retry_s else "")


class FrameSource(Protocol):
    """What the kiosk reads frames from. `Capture` is the real one; tests pass fakes."""

    description: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None:
        """Reopen now: after the end of a video, or without waiting for the next retry."""

    def status(self) -> SourceStatus: ...

    def next_frame(self, timeout: float) -> Frame | None:
        """The newest frame not yet handed out, waiting up to `timeout` s; None if none came."""


class FrameReader(Protocol):
    """Blocking reads, used only on the capture thread."""

    fps: float | None

    def read(self) -> np.ndarray | None:
        """The next RGB frame, or None at the end of the stream (or when a camera stops)."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "camera", "file", "folder" or "url"
    target: int | str
    description: str  # "camera 0", "video clip.mp4", ...

    @property
    def live(self) -> bool:
        """Cameras and streams run on their own clock; files and folders wait for us."""
        return self.kind in ("camera", "url")


def parse_source(text: str | int) -> SourceSpec:
    """`0` -> camera 0, `rtsp://...` -> stream, an existing folder or file -> that."""
    s = str(text).strip()
    if s.isdigit():
        return SourceSpec("camera", int(s), f"camera {int(s)}")
    if "://" in s:
        return SourceSpec("url", s, f"stream {s}")
    p = Path(s).expanduser()
    if p.is_dir():
        return SourceSpec("folder", str(p), f"folder {p}")
    if p.is_file():
        return SourceSpec("file", str(p), f"video {p.name}")
    hint = "(give a camera index, a video, a folder or a URL)"
    if p.exists() or p.is_symlink():
        # a device node, FIFO or socket: OpenCV would block on it or read endless bytes as "video"
        what = "a broken or looping link" if not p.exists() else "not a regular file or folder (a device, FIFO or socket)"
        raise SourceError(f"--source {s}: {what} {hint}")
    raise SourceError(f"--source {s}: no such file or folder {hint}")


def _quiet_opencv() -> None:
    # OpenCV prints several WARN lines when a camera index is absent, and
    # FFmpeg writes its own ("moov atom not found") straight to fd 2, where
    # the kiosk's screen is drawn. We say what went wrong once, in our own
    # words. FFmpeg reads this when OpenCV first uses it; a user who sets it
    # (e.g. to 32 to debug a stream) keeps their value.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging module
        pass


class VideoReader:
    """A camera, file or stream through cv2.VideoCapture."""

    def __init__(self, spec: SourceSpec):
        _quiet_opencv()
        self.cap = cv2.VideoCapture(spec.target)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(_cannot_open(spec))
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1.0 <= fps <= 240.0 else None

    def read(self) -> np.ndarray | None:
        ok, bgr = self.cap.read()
        if not ok or bgr is None or bgr.size == 0:
            return None
        if bgr.ndim == 2:
            return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        self.cap.release()


class FolderReader:
    """The images of a folder in name order; unreadable files are skipped."""

    fps = None

    def __init__(self, spec: SourceSpec):
        folder = Path(spec.target)
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise SourceError(f"folder {folder} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.pos = 0
        self.index = -1  # the image number of the frame last returned

    def read(self) -> np.ndarray | None:
        while self.pos < len(self.paths):
            self.index, self.pos = self.pos, self.pos + 1
            try:
                return load_image(self.paths[self.index])
            except ImageError:
                continue  # a demo folder with one bad file still plays the rest
        return None

    def close(self) -> None:
        pass


def _cannot_open(spec: SourceSpec) -> str:
    if spec.kind == "camera":
        return f"no camera found at index {spec.target}"
    if spec.kind == "url":
        return f"cannot open stream {spec.target}"
    return f"cannot read {spec.description} (not a video OpenCV can decode)"


def open_reader(spec: SourceSpec) -> FrameReader:
    """Open a source now; raises SourceError when it cannot be opened."""
    return FolderReader(spec) if spec.kind == "folder" else VideoReader(spec)


class Capture:
    """A FrameSource that reads on its own thread.

    Live sources (cameras, streams) keep only the newest frame: an unread
    frame is replaced, never queued. Files and folders either play in real
    time the same way (`realtime=True`, for the screen) or hand over every
    frame in order, waiting for the reader (`realtime=False`, for headless
    runs whose output must not depend on how fast this machine is).
    """

    def __init__(self, spec: SourceSpec, *, realtime: bool = True, retry_s: float = RETRY_S,
                 opener: Callable[[SourceSpec], FrameReader] = open_reader,
                 folder_interval_s: float = FOLDER_INTERVAL_S):
        if retry_s <= 0 or folder_interval_s < 0:
            raise ValueError("retry_s must be positive and folder_interval_s not negative")
        self.spec, self.description = spec, spec.description
        # what each frame says it came from (a folder's frames name their own image)
        self._origin = spec.description if spec.kind == "camera" else str(spec.target)
        self.lossy = spec.live or realtime
        self.paced = realtime and not spec.live  # cameras pace themselves
        self.retry_s, self.folder_interval_s = retry_s, folder_interval_s
        self._opener = opener
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._status = SourceStatus("starting", f"opening {spec.description}…")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0  # frames replaced before anyone read them

    # -- the consumer's side -------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edge-search-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def restart(self) -> None:
        self._wake.set()
        with self._cond:  # a lossless producer may be waiting for the slot
            self._cond.notify_all()

    def status(self) -> SourceStatus:
        return self._status

    def next_frame(self, timeout: float) -> Frame | None:
        with self._cond:
            if self._slot is None:
                self._cond.wait_for(lambda: self._slot is not None or self._stop.is_set(), timeout)
            frame, self._slot = self._slot, None
            self._cond.notify_all()  # a lossless producer waits for the slot to empty
            return frame

    # -- the capture thread ----------------------------------------------------
    def _set(self, state: str, message: str, retry: bool = False) -> None:
        self._status = SourceStatus(state, message, self.retry_s if retry else None)

    def _pause(self, seconds: float) -> bool:
        """Sleep until `seconds` pass, restart() or stop(); True if restart() woke us."""
        woke = self._wake.wait(seconds)
        self._wake.clear()
        return woke and not self._stop.is_set()

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if not self.lossy:
                self._cond.wait_for(lambda: self._slot is None or self._stop.is_set() or self._wake.is_set())
            elif self._slot is not None:
                self.dropped += 1
            self._slot = frame
            self._cond.notify_all()

    def _open(self) -> FrameReader | None:
        try:
            reader = self._opener(self.spec)
        except SourceError as e:
            if self.spec.live:  # a camera may be plugged in later, a stream may come back
                self._set("lost", str(e), retry=True)
            else:
                self._set("failed", str(e))
            return None
        except Exception as e:  # OpenCV backends raise their own errors; the thread must live on
            self._set("lost" if self.spec.live else "failed", f"cannot open {self.description} ({e})",
                      retry=self.spec.live)
            return None
        self._set("live", f"{self.description}")
        return reader

    def _run(self) -> None:
        reader: FrameReader | None = None
        try:
            while not self._stop.is_set():
                if reader is None:
                    reader = self._open()
                    if reader is None:
                        # live: retry by itself; files: only when asked to
                        self._pause(self.retry_s if self.spec.live else 3600.0)
                        continue
                    index, next_due = 0, time.monotonic()
                    interval = self._interval(reader)
                try:
                    image = reader.read()
                except Exception as e:  # a driver error is a lost camera, not a dead kiosk
                    image, error = None, e
                else:
                    error = None
                if image is None:
                    reader.close()
                    reader = None
                    if self.spec.live:
                        what = "camera" if self.spec.kind == "camera" else "stream"
                        detail = f" ({error})" if error else ""
                        self._set("lost", f"{what} {self.spec.target} stopped sending frames{detail}", retry=True)
                        self._pause(self.retry_s)
                    elif error is not None:
                        self._set("failed", f"cannot read {self.description} ({type(error).__name__}: {error})")
                        self._pause(3600.0)  # until restart() or stop()
                    else:
                        self._set("ended", f"end of {self.description}")
                        self._pause(3600.0)
                    continue
                name = self._origin
                if isinstance(reader, FolderReader):
                    index, name = reader.index, str(reader.paths[reader.index])
                self._publish(Frame(index=index, image=image, captured=time.monotonic(), wall=time.time(),
                                    still=self.spec.kind == "folder", source=name))
                index += 1
                if self._wake.is_set():  # restart() while playing: start over
                    self._wake.clear()
                    reader.close()
                    reader = None
                    continue
                if self.paced:
                    next_due += interval
                    delay = next_due - time.monotonic()
                    if delay > 0 and self._pause(delay):
                        reader.close()
                        reader = None
        finally:
            if reader is not None:
                reader.close()

    def _interval(self, reader: FrameReader) -> float:
        if self.spec.kind == "folder":
            return self.folder_interval_s
        return 1.0 / (reader.fps or FALLBACK_FPS)


def open_source(text: str | int, *, realtime: bool = True, retry_s: float = RETRY_S) -> Capture:
    """A Capture for a `--source` value (not started); raises SourceError for a missing path."""
    return Capture(parse_source(text), realtime=realtime, retry_s=retry_s)


def wait_until_open(source: FrameSource, timeout: float = 20.0, poll_s: float = 0.02) -> SourceStatus:
    """Block until the source has opened or failed to (or `timeout` passed)."""
    deadline = time.monotonic() + timeout
    status = source.status()
    while status.state == "starting" and time.monotonic() < deadline:
        time.sleep(poll_s)
        status = source.status()
    return status
