// The test's player page: plays ?hls or ?dash of the package at ./show/ with the same
// vendored players the status page serves, and keeps what the test asserts on window.
"use strict";
const video = document.getElementById("video");
window.errors = [];
window.heights = [];
video.addEventListener("resize", () => window.heights.push(video.videoHeight));
const how = location.search.slice(1);
if (how === "hls") {
  const hls = new Hls({ workerPath: "hls.worker.js" });
  hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) window.errors.push(data.details); });
  hls.loadSource("show/master.m3u8");
  hls.attachMedia(video);
  window.levels = () => hls.levels.map((l) => l.height);
  window.force = (height) => { hls.currentLevel = hls.levels.findIndex((l) => l.height === height); };
} else {
  const player = dashjs.MediaPlayer().create();
  player.updateSettings({ debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING } });
  player.on(dashjs.MediaPlayer.events.ERROR, (e) => window.errors.push(JSON.stringify(e.error)));
  player.initialize(video, "show/manifest.mpd", true);
  window.levels = () => player.getRepresentationsByType("video").map((r) => r.height);
  window.force = (height) => {
    player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: false } } } });
    const rep = player.getRepresentationsByType("video").find((r) => r.height === height);
    player.setRepresentationForTypeById("video", rep.id, true);
  };
}
video.play().catch((e) => window.errors.push(String(e)));
