"""Frame sources: parsing --source, the capture thread, end of stream, reconnects."""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import cv2
import numpy as np
import pytest

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search.kiosk.frames import (Capture, FolderReader, SourceError, SourceSpec, SourceStatus, open_reader,
                                open_source, parse_source, wait_until_open)
from edge_search.core.images import encode_jpeg
from edge_search_export.sample_catalog import draw_product


def solid(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


class ListReader:
    """Frames from a list; None at the end. `fail_after` makes read() raise (an unplugged camera)."""

    fps = None

    def __init__(self, values, fail_after: int | None = None, delay: float = 0.0):
        self.values, self.fail_after, self.delay, self.pos = list(values), fail_after, delay, 0
        self.closed = False

    def read(self):
        if self.delay:
            time.sleep(self.delay)
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise RuntimeError("device unplugged")
        if self.pos >= len(self.values):
            return None
        self.pos += 1
        return solid(self.values[self.pos - 1])

    def close(self):
        self.closed = True


def drain(source, n: int, timeout: float = 5.0) -> list:
    frames, deadline = [], time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < deadline:
        f = source.next_frame(0.05)
        if f is not None:
            frames.append(f)
    return frames


def wait_for(cond, what: str, timeout: float = 10.0) -> None:
    """Wait for a condition, not for a time: the deadline only bounds a failure."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def opened(reader: ListReader) -> tuple[list[ListReader], Callable]:
    """An opener handing out `reader`, and the list of the readers it handed out."""
    readers: list[ListReader] = []
    return readers, lambda spec: readers.append(reader) or reader


def wait_state(source, state: str, timeout: float = 5.0) -> SourceStatus:
    deadline = time.monotonic() + timeout
    while source.status().state != state and time.monotonic() < deadline:
        time.sleep(0.01)
    return source.status()


FILE = SourceSpec("file", "clip.mp4", "video clip.mp4")
CAMERA = SourceSpec("camera", 0, "camera 0")


def test_parse_source(tmp_path):
    assert parse_source("0") == SourceSpec("camera", 0, "camera 0")
    assert parse_source(2).kind == "camera"
    assert parse_source("rtsp://10.0.0.5/stream").kind == "url"
    assert parse_source(str(tmp_path)).kind == "folder"
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    assert parse_source(str(video)) == SourceSpec("file", str(video), "video a.mp4")
    with pytest.raises(SourceError, match="no such file or folder"):
        parse_source(str(tmp_path / "missing.mp4"))
    assert parse_source("0").live and parse_source("rtsp://h/s").live and not parse_source(str(video)).live


def test_special_sources_are_named_for_what_they_are(tmp_path):
    fifo = tmp_path / "cam.fifo"
    os.mkfifo(fifo)
    for special in (str(fifo), "/dev/null"):
        with pytest.raises(SourceError, match="not a regular file or folder") as e:
            parse_source(special)
        assert "no such file" not in str(e.value)
    dangling = tmp_path / "gone.mp4"
    dangling.symlink_to(tmp_path / "nowhere.mp4")
    with pytest.raises(SourceError, match="broken or looping link"):
        parse_source(str(dangling))


def test_lossless_file_hands_over_every_frame_in_order_then_ends():
    readers, opener = opened(ListReader(range(50)))
    src = Capture(FILE, realtime=False, opener=opener)
    src.start()
    try:
        # a slow consumer: the producer has read a second frame while the first waits in the slot;
        # it must wait for the slot, not drop
        wait_for(lambda: readers and readers[0].pos >= 2, "the producer to wait for the consumer")
        frames = drain(src, 50)
        assert [f.index for f in frames] == list(range(50))
        assert [int(f.image[0, 0, 0]) for f in frames] == list(range(50))
        assert wait_state(src, "ended").message == "end of video clip.mp4"
        assert src.dropped == 0
    finally:
        src.stop()


def test_restart_replays_a_file_from_the_start():
    src = Capture(FILE, realtime=False, opener=lambda spec: ListReader(range(3)))
    src.start()
    try:
        assert [f.index for f in drain(src, 3)] == [0, 1, 2]
        wait_state(src, "ended")
        src.restart()
        assert [f.index for f in drain(src, 3)] == [0, 1, 2]
    finally:
        src.stop()


def test_live_source_keeps_only_the_newest_frame():
    readers, opener = opened(ListReader(range(100_000), delay=0.002))
    src = Capture(CAMERA, opener=opener)
    src.start()
    try:
        # a consumer far slower than the camera: 40 frames captured before it asks
        wait_for(lambda: readers and readers[0].pos > 40, "the camera to deliver 40 frames")
        first = src.next_frame(1.0)
        second = src.next_frame(1.0)
        assert first is not None and second is not None
        assert first.index > 20, "an old frame was kept instead of the newest"
        assert src.dropped > 20
        assert second.index > first.index
    finally:
        src.stop()


def test_lost_camera_is_reported_and_reconnected():
    opened = []

    def opener(spec):
        opened.append(time.monotonic())
        if len(opened) == 2:  # unplugged: the first reconnect fails
            raise SourceError("no camera found at index 0")
        return ListReader(range(1000), fail_after=3 if len(opened) == 1 else None, delay=0.002)

    src = Capture(CAMERA, retry_s=0.2, opener=opener)
    src.start()
    try:
        assert len(drain(src, 3)) == 3
        lost = wait_state(src, "lost")
        assert lost.retry_s == 0.2
        assert "retrying every 0.2 s" in lost.text
        assert wait_state(src, "live", timeout=5).state == "live"
        # waited between tries (a loaded machine may already have cycled once more: >= 3)
        assert len(opened) >= 3 and opened[2] - opened[1] >= 0.15
        assert drain(src, 2), "frames flow again after the reconnect"
    finally:
        src.stop()


def test_no_camera_at_start_keeps_retrying_and_file_failure_does_not():
    def no_camera(spec):
        raise SourceError("no camera found at index 0")

    cam = Capture(CAMERA, retry_s=0.1, opener=no_camera)
    cam.start()
    try:
        st = wait_until_open(cam, timeout=2)
        assert st.state == "lost" and st.message == "no camera found at index 0"
    finally:
        cam.stop()
    bad = Capture(FILE, opener=lambda spec: (_ for _ in ()).throw(SourceError("cannot read video clip.mp4")))
    bad.start()
    try:
        assert wait_until_open(bad, timeout=2) == SourceStatus("failed", "cannot read video clip.mp4")
    finally:
        bad.stop()


def test_read_error_in_a_file_is_a_failure_in_words_not_a_dead_thread():
    src = Capture(FILE, realtime=False, opener=lambda spec: ListReader(range(10), fail_after=2))
    src.start()
    try:
        assert len(drain(src, 2)) == 2
        st = wait_state(src, "failed")
        assert "device unplugged" in st.message
        src.restart()  # the thread is still there to try again
        assert len(drain(src, 2)) == 2
    finally:
        src.stop()


def test_realtime_file_is_paced_to_its_frame_rate():
    class Fps10(ListReader):
        fps = 10.0

    src = Capture(FILE, realtime=True, opener=lambda spec: Fps10(range(100)))
    t0 = time.monotonic()
    src.start()
    try:
        frames = drain(src, 4)
        assert len(frames) == 4 and time.monotonic() - t0 >= 0.25  # 4 frames at 10 fps: >= 0.3 s
    finally:
        src.stop()


def test_stop_returns_promptly_while_waiting_for_a_slow_reader():
    readers, opener = opened(ListReader(range(100)))
    src = Capture(FILE, realtime=False, opener=opener)
    src.start()
    wait_for(lambda: readers and readers[0].pos >= 2, "the producer to wait for the reader")
    t0 = time.monotonic()
    src.stop()
    assert time.monotonic() - t0 < 2
    assert not any(t.name == "edge-search-capture" and t.is_alive() for t in threading.enumerate())


def test_folder_plays_images_in_name_order_as_stills_and_skips_bad_files(tmp_path):
    for name, i in (("b.jpg", 1), ("a.jpg", 0), ("c.png", 2)):
        (tmp_path / name).write_bytes(encode_jpeg(draw_product(i)))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(str(tmp_path), realtime=False)
    src.start()
    try:
        frames = drain(src, 3)
        assert wait_state(src, "ended").state == "ended"
    finally:
        src.stop()
    # a.jpg, b.jpg, broken.jpg (skipped), c.png: the index is the image's place in the folder
    assert [f.index for f in frames] == [0, 1, 3]
    assert all(f.still for f in frames)
    assert np.abs(frames[0].image.astype(int) - draw_product(0)).mean() < 3


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(SourceError, match="has no images"):
        FolderReader(parse_source(str(tmp_path)))


def test_video_file_through_opencv(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 320))
    assert writer.isOpened()
    for i in range(2):
        for _ in range(3):
            writer.write(cv2.cvtColor(draw_product(i), cv2.COLOR_RGB2BGR))
    writer.release()
    reader = open_reader(parse_source(str(path)))
    try:
        images = []
        while (img := reader.read()) is not None:
            images.append(img)
    finally:
        reader.close()
    assert reader.fps == pytest.approx(10.0)
    assert len(images) == 6 and images[0].shape == (320, 320, 3)
    # RGB order, not OpenCV's BGR: the first frame looks like product 0
    assert np.abs(images[0].astype(int) - draw_product(0)).mean() < 6


def test_not_a_video_and_no_camera_are_source_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 100)
    with pytest.raises(SourceError, match="not a video OpenCV can decode"):
        open_reader(parse_source(str(junk)))
    with pytest.raises(SourceError, match="no camera found at index 97"):
        open_reader(parse_source("97"))
