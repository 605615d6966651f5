// gliomaseg's interactive viewer: one case's four sequences with ground truth and prediction as label
// overlays, in NiiVue (vendored beside the page). Everything loads through <script> tags, which work
// from file:// where fetch() does not; a case's volumes are loaded only when its viewer is opened.
(function () {
  "use strict";
  var settings = window.gliomasegViewerSettings;  // written by Python: file locations, label names and colours
  var cases = (window.gliomasegCases = window.gliomasegCases || {});
  var scripts = {};

  function loadScript(src) {
    if (!scripts[src]) {
      scripts[src] = new Promise(function (resolve, reject) {
        var tag = document.createElement("script");
        tag.src = src;
        tag.onload = resolve;
        tag.onerror = function () { reject(new Error("could not load " + src)); };
        document.head.appendChild(tag);
      });
    }
    return scripts[src];
  }

  function bytes(base64) {
    var text = atob(base64), out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out.buffer;
  }

  function labelColormap() {
    var map = {R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["background"]};
    settings.labels.forEach(function (label) {
      map.R.push(label.rgb[0]); map.G.push(label.rgb[1]); map.B.push(label.rgb[2]);
      map.A.push(255); map.I.push(label.value); map.labels.push(label.name);
    });
    return map;
  }

  // The diameters overlay: 1 the longest diameter (white), 2 the perpendicular one (cyan).
  var DIAMETERS = {R: [0, 255, 0], G: [0, 255, 255], B: [0, 255, 255], A: [0, 255, 255], I: [0, 1, 2],
                   labels: ["", "longest diameter", "perpendicular diameter"]};

  function labelName(value) {
    var found = settings.labels.filter(function (label) { return label.value === Math.round(value); });
    return found.length ? found[0].name : "background";
  }

  function Viewer(panel, data) {
    this.panel = panel;
    this.data = data;
    this.canvas = panel.querySelector("canvas");
    this.sequences = {};
    this.overlays = {};
    this.ready = this.build();
  }

  Viewer.prototype.build = async function () {
    var self = this, nv = new niivue.Niivue({
      backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false, multiplanarShowRender: niivue.SHOW_RENDER.ALWAYS,
      dragAndDropEnabled: false, logLevel: "error"
    });
    this.nv = nv;
    await nv.attachToCanvas(this.canvas);
    for (var name of Object.keys(this.data.sequences)) {
      this.sequences[name] = await niivue.NVImage.new(bytes(this.data.sequences[name]), name + ".nii.gz");
    }
    var first = this.panel.querySelector(".sequence").value;
    nv.addVolume(this.sequences[first]);
    for (var kind of Object.keys(this.data.labels)) {
      var overlay = await niivue.NVImage.new(bytes(this.data.labels[kind]), kind + ".nii.gz");
      overlay.setColormapLabel(kind === "diameters" ? DIAMETERS : labelColormap());
      overlay.opacity = this.opacity();
      this.overlays[kind] = overlay;
      nv.addVolume(overlay);
    }
    nv.onLocationChange = function (location) { self.describe(location); };
    this.bindControls();
    this.applyLayout();
    if (this.data.focus) nv.scene.crosshairPos = nv.mm2frac(this.data.focus);
    this.refresh();
    nv.createOnLocationChange();
  };

  Viewer.prototype.opacity = function () {
    return parseFloat(this.panel.querySelector(".opacity").value);
  };

  Viewer.prototype.showSequence = function (name) {
    var nv = this.nv, current = nv.volumes[0];
    if (current === this.sequences[name]) return;
    nv.removeVolume(current);
    nv.addVolume(this.sequences[name]);
    nv.setVolume(this.sequences[name], 0);
    this.refresh();
  };

  Viewer.prototype.refresh = function () {
    var self = this;
    Object.keys(this.overlays).forEach(function (kind) {
      var box = self.panel.querySelector('.show-' + kind);
      var shown = box && box.checked;
      self.overlays[kind].opacity = shown ? (kind === "diameters" ? 1 : self.opacity()) : 0;
    });
    this.nv.updateGLVolume();
  };

  Viewer.prototype.applyLayout = function () {
    var choice = this.panel.querySelector(".layout").value;
    this.nv.setSliceType(niivue.SLICE_TYPE[choice]);
  };

  Viewer.prototype.bindControls = function () {
    var self = this, panel = this.panel;
    panel.querySelector(".sequence").addEventListener("change", function (event) { self.showSequence(event.target.value); });
    panel.querySelectorAll(".show-truth, .show-prediction, .show-diameters, .opacity").forEach(function (control) {
      control.addEventListener("input", function () { self.refresh(); });
    });
    panel.querySelector(".layout").addEventListener("change", function () { self.applyLayout(); });
  };

  Viewer.prototype.describe = function (location) {
    // world coordinates: the volumes are cropped, so their voxel indices are not the input file's
    var parts = [Array.prototype.slice.call(location.mm, 0, 3).map(function (v) { return v.toFixed(1); }).join(", ") + " mm"];
    location.values.forEach(function (entry) {
      var kind = entry.name.replace(/\.nii\.gz$/, "");
      if (kind === "truth" || kind === "prediction") parts.push(kind + " " + labelName(entry.value));
      else if (kind === "diameters") { if (Math.round(entry.value)) parts.push(DIAMETERS.labels[Math.round(entry.value)]); }
      else parts.push(kind + " " + (Math.round(entry.value * 100) / 100));
    });
    this.panel.querySelector(".viewer-location").textContent = parts.join(" \u00b7 ");
  };

  // What a test (or a curious reader) can ask the viewer: how many drawn pixels are not the background, and
  // a checksum of them, read back right after drawing (WebGL keeps no copy of a frame once it is shown).
  Viewer.prototype.snapshot = function () {
    this.nv.drawScene();
    var gl = this.nv.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight, pixels = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
    var drawn = 0, sum = 0;
    for (var i = 0; i < pixels.length; i += 4) {
      if (pixels[i] || pixels[i + 1] || pixels[i + 2]) drawn++;
      sum = (sum * 31 + pixels[i] + 7 * pixels[i + 1] + 13 * pixels[i + 2]) % 1000000007;
    }
    return {width: w, height: h, drawn: drawn, checksum: sum};
  };

  function open(panel) {
    if (panel.viewer) return panel.viewer.ready;
    var id = panel.dataset.case, status = panel.querySelector(".viewer-location");
    status.textContent = "loading\u2026";
    panel.viewer = {ready: loadScript(settings.niivue).then(function () { return loadScript(panel.dataset.volumes); }).then(function () {
      var viewer = new Viewer(panel, cases[id]);
      panel.viewer = viewer;
      return viewer.ready.then(function () { return viewer; });
    }).catch(function (error) { status.textContent = error.message; throw error; })};
    return panel.viewer.ready;
  }

  window.gliomasegOpenViewer = open;
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("details.viewer-case").forEach(function (details) {
      var panel = details.querySelector(".viewer");
      details.addEventListener("toggle", function () { if (details.open) open(panel); });
      if (details.open) open(panel);
    });
  });
})();
