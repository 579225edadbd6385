"""A package's pure parts: the spec's ladder, the ladder resolved against a source, the
segments cut from fragments, the check that names what breaks a rule, and the playlists
and MPD written from the measurements."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from cluster.control.graphs.package import _cuts, _Plan
from cluster.errors import ConfigError, InputError, OutputError, SpecError
from cluster.media.cmaf import NON_SYNC, CmafError, Fragment, Init, read_fragments, read_init
from cluster.media.confine import confine
from cluster.media.encoders import CATALOG
from cluster.media.ladder import default_cap, resolve
from cluster.media.manifests import (
    Expected,
    Track,
    check,
    cut,
    dash_mpd,
    hls_iframes,
    hls_master,
    hls_media,
    measure,
    peak,
    target_duration,
    unique_names,
)
from cluster.media.packaging import gop_args, package_command, rendition_command
from cluster.media.paths import check_package_folder
from cluster.model.jobs import JobKind, JobSpec
from cluster.model.media import AudioStream, MediaInfo, SubtitleStream, VideoStream
from cluster.model.package import PackageOptions, PackageStep, Rendition, RenditionStep, Rung
from cluster.model.split import FrameIndex, Segment
from cluster.watch import FolderWatcher, WatchRule, check_rule


def source(
    width: int = 1280, height: int = 720, rate: tuple[int, int] | None = (25, 1)
) -> MediaInfo:
    video = VideoStream(0, "h264", width, height, "yuv420p", 8, rate)
    return MediaInfo(
        "/m/master.mkv", "matroska", 12.0, 1000, 1000, video, frame_count=300,
        audio=(AudioStream(1, "aac", 2, 48000, "eng"), AudioStream(2, "ac3", 6, 48000, "fra")),
        subtitles=(SubtitleStream(3, "subrip", "eng"), SubtitleStream(4, "hdmv_pgs_subtitle")),
    )  # fmt: skip


def spec(**package: object) -> JobSpec:
    return JobSpec(kind=JobKind.PACKAGE, input="/m/master.mkv", output="/m/out/show",
                   package=package)  # type: ignore[arg-type]  # fmt: skip


# ---- the spec ----------------------------------------------------------------------------


def test_a_package_spec_takes_rungs_as_text_or_objects_and_round_trips() -> None:
    s = spec(ladder="720:h264:3000,360", segment_s=4, formats="hls")
    assert s.package == PackageOptions((Rung(720, "h264", 3000), Rung(360)), ("h264",), 4.0,
                                       ("hls",))  # fmt: skip
    assert JobSpec.from_dict(s.to_dict()) == s
    objects = spec(ladder=[{"height": 540, "codec": "hevc", "max_kbps": 1500}])
    assert objects.package is not None and objects.package.ladder == (Rung(540, "hevc", 1500),)
    assert spec().package == PackageOptions()


@pytest.mark.parametrize(
    ("package", "message"),
    [
        ({"ladder": "720,720"}, r"ladder rung 2 \(720p h264\) repeats rung 1"),
        ({"ladder": "721"}, r"ladder rung 1 \(721p h264\): height must be an even number"),
        ({"ladder": "720:vp9"}, r"ladder rung 1 \(720p vp9\): unknown codec 'vp9'"),
        ({"ladder": "720:h264:10"}, r"ladder rung 1 \(720p h264\): max_kbps must be"),
        ({"ladder": "tall"}, r"ladder rung 1 'tall' is not a rung; give HEIGHT"),
        ({"segment_s": 1}, r"segment length 1 s: give 2 to 20 seconds"),
        ({"formats": "hls,smooth"}, r"package formats \['hls', 'smooth'\]: choose from hls, dash"),
        ({"rungs": []}, r"package: unknown field\(s\) rungs"),
    ],
)
def test_a_bad_ladder_is_refused_naming_the_rung(package: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        spec(**package)


def test_package_options_belong_to_package_jobs_only() -> None:
    with pytest.raises(SpecError, match="package options are for package jobs, not transcode"):
        JobSpec(kind=JobKind.TRANSCODE, input="/a.mp4", output="/b.mp4",
                package=PackageOptions())  # fmt: skip
    with pytest.raises(SpecError, match="a package job needs an output folder"):
        JobSpec(kind=JobKind.PACKAGE, input="/a.mp4")


# ---- the ladder --------------------------------------------------------------------------


def test_the_default_ladder_never_upscales_and_keeps_the_aspect_ratio() -> None:
    renditions, notes = resolve(PackageOptions(), source())
    videos = [(r.width, r.height, r.max_kbps) for r in renditions if r.kind == "video"]
    assert videos == [(1280, 720, 3000), (960, 540, 2000), (640, 360, 730)]
    audio = [(r.key, r.stream, r.language) for r in renditions if r.kind == "audio"]
    assert audio == [("a1", 1, "eng"), ("a2", 2, "fra")]
    assert [(r.key, r.language) for r in renditions if r.kind == "text"] == [("s1", "eng")]
    assert notes == ["subtitle stream 4 (hdmv_pgs_subtitle) left out: only text subtitles "
                     "become WebVTT"]  # fmt: skip


def test_an_explicit_rung_above_the_source_is_dropped_with_a_note() -> None:
    options = PackageOptions((Rung(1080), Rung(480, "hevc")), ("h264",))
    renditions, notes = resolve(options, source(720, 576))  # a 4:3-ish SD master, 576p
    assert [(r.width, r.height, r.codec) for r in renditions if r.kind == "video"] == [
        (600, 480, "hevc")]  # fmt: skip
    assert notes[0] == ("ladder rung 1 (1080p h264) dropped: the source is 576 pixels high and "
                        "framefleet never upscales")  # fmt: skip
    tiny, notes = resolve(PackageOptions(), source(320, 180))
    assert [(r.width, r.height) for r in tiny if r.kind == "video"] == [(320, 180)]
    assert "one rung at the source's own height (180p)" in notes[0]


def test_caps_follow_the_codec_and_the_height() -> None:
    assert default_cap(1080, "h264") == 6000
    assert default_cap(1080, "hevc") == 3900 and default_cap(1080, "av1") == 3300
    assert 2000 < default_cap(600, "h264") < 3000


def test_a_source_without_a_frame_rate_cannot_be_packaged() -> None:
    with pytest.raises(InputError, match="no known frame rate; a package needs one"):
        resolve(PackageOptions(), source(rate=None))


# ---- the commands ------------------------------------------------------------------------


def test_every_rendition_forces_keyframes_at_the_same_frames() -> None:
    x264 = next(e for e in CATALOG if e.name == "libx264")
    nvenc = next(e for e in CATALOG if e.name == "h264_nvenc")
    assert gop_args(x264, 50)[:6] == ["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"]
    assert "-no-scenecut" in gop_args(nvenc, 50) and "-forced-idr" in gop_args(nvenc, 50)
    rendition = Rendition("v360h264", "video", "h264", 640, 360, 730)
    task = JobSpec(kind=JobKind.TRANSCODE, input="/m/master.mkv", output="/m/out/.show.j-v.mp4")
    command = rendition_command(task, source(), x264, RenditionStep(rendition, 50), job_id="j.1")
    argv = command.argv
    assert argv[argv.index("-force_key_frames") + 1] == "expr:eq(mod(n,50),0)"
    assert argv[argv.index("-vf") + 1] == "scale=640:360:flags=bicubic,setsar=1"
    assert (
        argv[argv.index("-maxrate") + 1] == "730k" and argv[argv.index("-bufsize") + 1] == "1460k"
    )
    chunk = Segment(1, 150, 150, 6.0, 6.0, False)
    chunked = rendition_command(task, source(), x264, RenditionStep(rendition, 50, chunk),
                                job_id="j.1").argv  # fmt: skip
    assert chunked[chunked.index("-ss") + 1] == "5.980"
    assert chunked[chunked.index("-frames:v") + 1] == "150"


def test_the_package_command_copies_and_never_reencodes_video() -> None:
    renditions = (Rendition("v360h264", "video", "h264", 640, 360, 730),
                  Rendition("a1", "audio", "aac", max_kbps=128, stream=1),
                  Rendition("s1", "text", "wvtt", stream=3))  # fmt: skip
    files: dict[str, tuple[str, ...]] = {
        "v360h264": (".show.j-v360h264.mp4",),
        "a1": (".show.j-a1.mp4",),
    }
    whole: dict[str, tuple[Segment, ...]] = {k: (Segment(0, 0, 300, 0.0, 12.0, True),)
                                             for k in files}  # fmt: skip
    step = PackageStep(renditions, files, whole, 50, 150, 6.0, "25/1", 12.0, 300)
    command = package_command(spec(), source(), step, job_id="j-package.1")
    argv = command.argv
    assert command.outputs == [("/m/out/.show.j-package.1.partial", "/m/out/show")]
    assert "file:/m/out/.show.j-package.1.partial/v360h264/.whole.mp4" in argv
    assert argv.count("copy") == 2 and "libx264" not in argv
    assert argv[argv.index("-c:s") + 1] == "webvtt"
    assert "-frag_duration" in argv  # audio fragments every GOP


# ---- segments, the check and the manifests -----------------------------------------------


def fragments(count: int, frames: int = 50, tick: int = 512, sync: bool = True) -> list[Fragment]:
    out, at, time = [], 1000, 0
    for _ in range(count):
        size = 10_000
        out.append(Fragment(at, at + size, time, frames * tick, frames, sync, at + 2000))
        at, time = at + size, time + frames * tick
    return out


def track(key: str, parts: list[Fragment], segment_frames: int = 150, height: int = 360) -> Track:
    init = Init("vide", 12800, "avc1.64001e", width=height * 16 // 9, height=height)
    groups = cut(parts, segment_frames=segment_frames)
    rendition = Rendition(key, "video", "h264", height * 16 // 9, height, 730)
    return Track(rendition, init, tuple(measure(g, n, video=True) for n, g in enumerate(groups, 1)))


EXPECTED = Expected(frames=300, duration_s=12.0, frame_s=0.04, segment_s=6.0, segment_frames=150)


def test_segments_are_cut_every_segment_frames_and_pass_the_check() -> None:
    a, b = track("v360h264", fragments(6)), track("v180h264", fragments(6), height=180)
    assert [len(s.iframes) for s in a.segments] == [3, 3]
    assert [s.duration / a.timescale for s in a.segments] == [6.0, 6.0]
    verdict = check([a, b], [], EXPECTED)
    assert verdict.problems == [] and verdict.segments == 4
    assert a.peak_bps == a.average_bps == 40_000
    assert target_duration([a]) == 6


def test_the_check_names_the_rendition_and_segment_that_break_a_rule() -> None:
    good = track("v360h264", fragments(6))
    late = fragments(6)
    late[3] = Fragment(late[3].start, late[3].end, late[3].decode_time, late[3].duration,
                       late[3].samples, False, late[3].first_sample_end)  # fmt: skip
    broken = track("v180h264", late, height=180)
    problems = check([good, broken], [], EXPECTED).problems
    assert problems == [
        "rendition v180h264 (320x180 h264) segment 2 does not start with a keyframe"
    ]
    short = track("v180h264", fragments(3), height=180)
    problems = check([good, short], [], EXPECTED).problems
    assert problems == [
        "rendition v180h264 (320x180 h264) holds 150 frames; the source 300",
        "rendition v180h264 (320x180 h264) has 1 segments; rendition v360h264 (640x360 h264) 2",
    ]
    odd = track("v180h264", fragments(12, frames=25), segment_frames=150, height=180)
    assert check([good, odd], [], EXPECTED).problems == []
    skewed = track("v180h264", fragments(4, frames=75), segment_frames=150, height=180)
    assert check([skewed], [], EXPECTED).problems == []
    long = track("v360h264", fragments(6), segment_frames=300)
    assert check([long], [], EXPECTED).problems == [
        "rendition v360h264 (640x360 h264) segment 1 lasts 12.000 s, past the target 6 s + 0.5 s"
    ]


def test_playlists_and_mpd_say_what_was_measured() -> None:
    video = track("v360h264", fragments(6))
    media = hls_media(video, 6)
    assert "#EXT-X-TARGETDURATION:6" in media and "#EXT-X-PLAYLIST-TYPE:VOD" in media
    assert media.count("#EXTINF:6.00000,") == 2 and media.endswith("#EXT-X-ENDLIST\n")
    iframes = hls_iframes(video)
    assert "#EXT-X-I-FRAMES-ONLY" in iframes and "#EXT-X-BYTERANGE:2000@10000" in iframes
    master = hls_master([video], [], [], "25/1")
    assert ("BANDWIDTH=40000,AVERAGE-BANDWIDTH=40000,CODECS=\"avc1.64001e\",RESOLUTION=640x360,"
            "FRAME-RATE=25.000") in master  # fmt: skip
    mpd = dash_mpd([video], [], [], "25/1", 12.0, 6.0)
    assert '<S t="0" d="76800" r="1"/>' in mpd and 'bandwidth="40000"' in mpd


def test_a_watch_rule_packages_each_master_into_a_folder_of_its_own(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    rule = WatchRule(tmp_path / "in", tmp_path / "out", {"kind": "package"})
    check_rule(rule)
    watcher = FolderWatcher(rule, tmp_path / "watch.db", submit=lambda spec: spec)  # type: ignore[arg-type,return-value]
    spec = watcher.spec_for(tmp_path / "in" / "show.mov")
    assert spec.kind is JobKind.PACKAGE and spec.output == str(tmp_path / "out" / "show")
    assert spec.package == PackageOptions()
    with pytest.raises(ConfigError, match="a package rule needs an output folder"):
        FolderWatcher(WatchRule(tmp_path / "in", None, {"kind": "package"}), tmp_path / "w.db",
                      submit=lambda s: s).spec_for(tmp_path / "in" / "a.mov")  # type: ignore[arg-type,return-value]  # fmt: skip


# ---- CMAF boxes --------------------------------------------------------------------------


def box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big"), *parts)


def init_segment(handler: bytes, entry: bytes) -> bytes:
    mdhd = full(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, 12800, 0), b"\0\0\0\0")
    hdlr = full(b"hdlr", 0, 0, b"\0\0\0\0", handler, b"\0" * 12, b"\0")
    stsd = full(b"stsd", 0, 0, struct.pack(">I", 1), entry)
    trak = box(b"trak", box(b"mdia", mdhd, hdlr, box(b"minf", box(b"stbl", stsd))))
    trex = full(b"trex", 0, 0, struct.pack(">IIIII", 1, 1, 512, 0, NON_SYNC))
    return box(b"ftyp", b"iso6\0\0\0\0") + box(b"moov", trak, box(b"mvex", trex))


def visual(fourcc: bytes, config: bytes) -> bytes:
    header = b"\0" * 6 + b"\0\x01" + b"\0" * 16 + struct.pack(">HH", 1920, 1080) + b"\0" * 50
    return box(fourcc, header, config)


@pytest.mark.parametrize(
    ("entry", "codecs"),
    [
        (visual(b"avc1", box(b"avcC", bytes([1, 0x64, 0x00, 0x28, 0xFF]))), "avc1.640028"),
        # Apple's example: Main profile, compatibility 0x60000000, level 93, constraint B0
        (visual(b"hvc1", box(b"hvcC", bytes([1, 0x01, 0x60, 0, 0, 0, 0xB0, 0, 0, 0, 0, 0, 93]))),
         "hvc1.1.6.L93.B0"),
        (visual(b"av01", box(b"av1C", bytes([0x81, 0x08, 0x0C, 0]))), "av01.0.08M.08"),
    ],
)  # fmt: skip
def test_codecs_strings_come_from_the_configuration_records(entry: bytes, codecs: str) -> None:
    init = read_init(init_segment(b"vide", entry))
    assert (init.codecs, init.width, init.height, init.timescale) == (codecs, 1920, 1080, 12800)


def test_audio_codecs_and_fragments_are_read_box_by_box() -> None:
    esds = full(b"esds", 0, 0, bytes([0x03, 0x19, 0, 1, 0, 0x04, 0x11, 0x40, 0x15]) + b"\0" * 11
                + bytes([0x05, 0x02, 0x11, 0x90]))  # fmt: skip
    audio = box(b"mp4a", b"\0" * 6 + b"\0\x01" + b"\0" * 8 + struct.pack(">HHI", 2, 16, 0)
                + struct.pack(">I", 48000 << 16), esds)  # fmt: skip
    data = init_segment(b"soun", audio)
    init = read_init(data)
    assert (init.codecs, init.channels, init.sample_rate) == ("mp4a.40.2", 2, 48000)
    # one fragment: 3 samples, the first a sync sample (first-sample-flags 0)
    trun = full(
        b"trun", 0, 0x1 | 0x4 | 0x200, struct.pack(">IiI", 3, 0, 0), struct.pack(">III", 10, 20, 30)
    )
    tfhd = full(b"tfhd", 0, 0x20000, struct.pack(">I", 1))
    tfdt = full(b"tfdt", 1, 0, struct.pack(">Q", 2**33))
    moof = box(b"moof", box(b"traf", tfhd, tfdt, trun))
    offset = len(moof) + 8  # the samples start after the mdat's header
    trun = full(b"trun", 0, 0x1 | 0x4 | 0x200, struct.pack(">IiI", 3, offset, 0),
                struct.pack(">III", 10, 20, 30))  # fmt: skip
    moof = box(b"moof", box(b"traf", tfhd, tfdt, trun))
    data += moof + box(b"mdat", b"\0" * 60)
    (fragment,) = read_fragments(data, init)
    assert (fragment.decode_time, fragment.duration, fragment.samples, fragment.sync) == (
        2**33, 3 * 512, 3, True)  # fmt: skip
    assert fragment.first_sample_end - fragment.start == offset + 10
    with pytest.raises(CmafError, match="has no mdat"):
        read_fragments(data[: -(60 + 8)], init)


# ---- what a second read found ------------------------------------------------------------


def test_a_short_last_segment_does_not_inflate_the_peak() -> None:
    tail = Fragment(61_000, 71_000, 6 * 50 * 512, 512, 1, True, 63_000)  # one IDR, 10 kB
    video = track("v360h264", [*fragments(6), tail])
    assert [round(video.seconds(s.duration), 2) for s in video.segments] == [6.0, 6.0, 0.04]
    assert video.peak_bps == math.ceil(40_000 * 8 / 6.04)  # the tail with the segment before
    assert peak([(10_000, 6.0), (10_000, 0.04)], 3.0) == math.ceil(20_000 * 8 / 6.04)
    assert peak([(100, 1.0)], 3.0) == 800  # shorter than a window: the whole


def test_audio_that_outlasts_the_video_goes_on_in_segments_of_the_same_length() -> None:
    audio = [Fragment(i * 100, i * 100 + 100, i * 96_000, 96_000, 94, True, i * 100 + 10)
             for i in range(8)]  # 2 s fragments at 48 kHz: 16 s of audio  # fmt: skip
    groups = cut(audio, times=[0.0, 6.0], every=6.0, timescale=48_000)
    assert [len(g) for g in groups] == [3, 3, 2]  # 0-6, 6-12 and 12-16 s, none 10 s long


def test_the_check_trusts_the_frame_count_over_the_container_duration() -> None:
    video = track("v360h264", fragments(6))
    longer = Expected(frames=300, duration_s=12.9, frame_s=0.04, segment_s=6.0,
                      segment_frames=150)  # the container's duration: its audio's  # fmt: skip
    assert check([video], [], longer).problems == []
    half = Expected(frames=None, duration_s=12.0, frame_s=0.04, segment_s=2.5, segment_frames=60)
    assert check([track("v", fragments(5, frames=60), segment_frames=60)], [], half).problems == []


def test_tracks_of_one_language_get_names_of_their_own() -> None:
    renditions = [Rendition("a1", "audio", "aac", name="eng"), Rendition("a2", "audio", "aac",
                  name="eng"), Rendition("s1", "text", "wvtt", name="eng")]  # fmt: skip
    assert unique_names(renditions) == {"a1": "eng", "a2": "eng 2", "s1": "eng"}


def test_a_package_folder_is_its_own_and_overwrite_replaces_only_a_package(tmp_path: Path) -> None:
    master = tmp_path / "show" / "master.mov"
    master.parent.mkdir()
    master.write_bytes(b"x")
    with pytest.raises(OutputError, match="holds the input; give the package a folder"):
        check_package_folder(tmp_path / "show", input_path=master, overwrite=True)
    other = tmp_path / "photos"
    other.mkdir()
    with pytest.raises(OutputError, match="exists and is not a package"):
        check_package_folder(other, input_path=master, overwrite=True)
    (other / "manifest.mpd").write_text("<MPD/>")
    check_package_folder(other, input_path=master, overwrite=True)
    root = replace(spec(), input=str(master), output=str(tmp_path))
    with pytest.raises(SpecError, match="is a media root; give the package a folder inside"):
        confine(root, (tmp_path,), ())


def test_a_rung_group_decodes_once_and_writes_a_file_per_rung() -> None:
    x264 = next(e for e in CATALOG if e.name == "libx264")
    rungs = (Rendition("v720h264", "video", "h264", 1280, 720, 3000),
             Rendition("v360h264", "video", "h264", 640, 360, 730))  # fmt: skip
    names = (".show.j-gh264c002.v720h264.mp4", ".show.j-gh264c002.v360h264.mp4")
    task = JobSpec(kind=JobKind.TRANSCODE, input="/m/master.mkv", output=f"/m/out/{names[0]}")
    chunk = Segment(1, 150, 150, 6.0, 6.0, False)
    step = RenditionStep(rungs[0], 50, chunk, rungs[1:], names)
    command = rendition_command(task, source(), x264, step, job_id="j-gh264c002.1", threads=1)
    argv = command.argv
    assert argv.count("-i") == 1 and argv[argv.index("-ss") + 1] == "5.980"
    assert argv[argv.index("-filter_complex") + 1] == (
        "[0:0]split=2[s0][s1];[s0]scale=1280:720:flags=bicubic,setsar=1[o0];"
        "[s1]scale=640:360:flags=bicubic,setsar=1[o1]")  # fmt: skip
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-maxrate"] == ["3000k", "730k"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "-frames:v"] == ["150", "150"]
    assert [final for _, final in command.outputs] == [f"/m/out/{n}" for n in names]
    assert RenditionStep.from_dict(step.to_dict()) == step


def test_a_sliver_of_audio_past_the_video_joins_the_last_segment() -> None:
    audio = [Fragment(0, 100, 0, 96_000, 94, True, 10),
             Fragment(100, 200, 96_000, 960, 1, True, 110)]  # 2 s, then 20 ms  # fmt: skip
    assert [len(g) for g in cut(audio, times=[0.0], every=2.0, timescale=48_000)] == [2]


def test_a_sliver_stays_apart_when_joining_it_would_make_a_segment_too_long() -> None:
    step = 96_256  # 94 AAC frames at 48 kHz: 2.0053 s
    audio = [Fragment(i * 100, i * 100 + 100, i * step, step, 94, True, i * 100 + 10)
             for i in range(6)]  # fmt: skip
    audio.append(Fragment(600, 700, 6 * step, 24_960, 24, True, 610))  # 0.52 s more
    groups = cut(audio, times=[0.0, 6.0], every=6.0, timescale=48_000)
    lasts = [sum(f.duration for f in g) / 48_000 for g in groups]
    assert all(d <= 6.5 for d in lasts), lasts


def test_chunks_take_even_shares_and_a_short_last_segment_is_part_of_one() -> None:
    plan = _Plan(PackageOptions(), (), (), 25, 150, 1501, {"gh264": 10}, "")
    times = tuple(i * 0.04 for i in range(1501))
    index = FrameIndex(0.0, times, frozenset(range(0, 1501, 250)))
    cuts = _cuts(plan, "gh264", index)
    assert [c.frames for c in cuts] == [150] * 9 + [151]
    four = _cuts(replace(plan, chunks={"gh264": 4}), "gh264", index)
    assert [c.frames for c in four] == [450, 300, 450, 301]  # 3, 2, 3 and 2 segments
