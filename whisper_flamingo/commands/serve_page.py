"""The single HTML page of ``whisper-flamingo serve``: inline style and script, no outside resources."""

from __future__ import annotations

import html

__all__ = ["page"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 72em; padding: 0 1em; color: #222; }
fieldset { border: 1px solid #ccc; border-radius: 6px; margin-bottom: 1em; }
label { margin-right: 1.2em; }
#error { color: #b00020; font-weight: bold; white-space: pre-wrap; }
#results { display: flex; gap: 1.5em; flex-wrap: wrap; }
.column { flex: 1 1 28em; min-width: 20em; }
.transcript { font-size: 0.95em; line-height: 1.5; }
.transcript .time { color: #666; font-family: monospace; margin-right: 0.5em; }
progress { width: 24em; }
img#tags { max-width: 100%; display: block; margin-top: 0.5em; }
video { max-width: 100%; max-height: 22em; }
"""

_SCRIPT = """
const $ = (id) => document.getElementById(id);
let recorded = null, recorder = null, localUrl = null;
function fmt(t) {
  const ms = Math.round(t * 1000), h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60;
  const s = Math.floor(ms / 1000) % 60, r = ms % 1000, p = (x, n) => String(x).padStart(n, '0');
  return (h ? p(h, 2) + ':' : '') + p(m, 2) + ':' + p(s, 2) + '.' + p(r, 3);
}
function showError(msg) {
  $('error').textContent = msg; $('status').textContent = 'failed'; $('submit').disabled = false;
}
$('noise').addEventListener('change', () => { $('noise-file-row').hidden = $('noise').value !== 'file'; });
$('record').addEventListener('click', async () => {
  if (recorder) { recorder.stop(); return; }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      recorded = new File(chunks, 'recording.webm', {type: 'audio/webm'});
      recorder = null; $('record').textContent = 'Record'; $('recorded').textContent = 'recording ready';
    };
    recorder.start(); $('record').textContent = 'Stop'; $('recorded').textContent = 'recording...';
  } catch (e) { showError('cannot record: ' + e); }
});
async function poll(id) {
  while (true) {
    const r = await fetch('/api/jobs/' + id);
    const job = await r.json();
    if (!r.ok) { showError(job.error); return; }
    $('progress').value = job.progress;
    $('status').textContent = job.state + ' ' + Math.round(100 * job.progress) + '%';
    if (job.state === 'error') { showError(job.error); return; }
    if (job.state === 'done') { show(job); return; }
    await new Promise((ok) => setTimeout(ok, 250));
  }
}
function show(job) {
  const box = $('results'); box.innerHTML = '';
  job.results.forEach((res, i) => {
    const col = document.createElement('div'); col.className = 'column'; col.id = 'result-' + i;
    const title = res.modality === 'asr' ? 'audio only' : (res.modality === 'avsr' ? 'audio-visual' : res.modality);
    const h = document.createElement('h3');
    h.textContent = title + ' (' + res.modality + ', ' + res.modality_note + '), language ' + res.language;
    col.appendChild(h);
    const t = document.createElement('div'); t.className = 'transcript';
    res.segments.forEach((s) => {
      const line = document.createElement('div'), time = document.createElement('span');
      time.className = 'time'; time.textContent = '[' + fmt(s.start) + ' \u2192 ' + fmt(s.end) + ']';
      line.appendChild(time); line.appendChild(document.createTextNode(s.text.trim())); t.appendChild(line);
    });
    col.appendChild(t); box.appendChild(col);
  });
  $('player').src = job.files['audio.wav'];
  const links = $('downloads'); links.innerHTML = '';
  ['srt', 'vtt', 'json'].forEach((f) => {
    const a = document.createElement('a'); a.href = job.files['transcript.' + f];
    a.textContent = f; a.download = job.name.replace(/\\.[^.]*$/, '') + '.' + f;
    links.appendChild(a); links.appendChild(document.createTextNode(' '));
  });
  const video = $('video');
  if (localUrl) {
    video.hidden = false; video.src = localUrl; video.innerHTML = '';
    const track = document.createElement('track');
    track.kind = 'subtitles'; track.srclang = 'en'; track.label = 'transcript'; track.default = true;
    track.src = job.files['transcript.vtt']; video.appendChild(track);
  } else { video.hidden = true; }
  const img = $('tags');
  if (job.files['tags.png']) { img.hidden = false; img.src = job.files['tags.png']; } else { img.hidden = true; }
  $('output').hidden = false; $('submit').disabled = false;
}
$('form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('error').textContent = ''; $('output').hidden = true;
  const file = $('file').files[0] || recorded;
  if (!file) { showError('choose a file or record first'); return; }
  if (localUrl) URL.revokeObjectURL(localUrl);
  localUrl = file.type.startsWith('video/') ? URL.createObjectURL(file) : null;
  const data = new FormData();
  data.append('file', file, file.name);
  for (const k of ['language', 'task', 'beam_size', 'noise', 'snr']) data.append(k, $(k).value);
  if ($('noise').value === 'file' && $('noise_file').files[0]) data.append('noise_file', $('noise_file').files[0]);
  $('submit').disabled = true; $('status').textContent = 'uploading'; $('progress').value = 0;
  try {
    const r = await fetch('/api/jobs', {method: 'POST', body: data});
    const body = await r.json().catch(() => ({error: 'upload failed (HTTP ' + r.status + ')'}));
    if (!r.ok) { showError(body.error || ('upload failed (HTTP ' + r.status + ')')); return; }
    await poll(body.id);
  } catch (e) { showError('upload failed: ' + e); }
});
"""


def page(*, model_name: str, audio_visual: bool, tags: bool, babble: bool, max_upload_mb: float,
         languages: tuple[str, ...]) -> str:
    """The page for a server running ``model_name`` (flags say what the model can show)."""
    langs = "".join(f'<option value="{x}">{x}</option>' for x in languages)
    noises = '<option value="none">none</option><option value="white">white noise</option>'
    if babble:
        noises += '<option value="babble">babble</option>'
    noises += '<option value="file">a noise file...</option>'
    notes = [f"model <b>{html.escape(model_name)}</b>",
             "audio-visual (videos: audio only next to audio-visual)" if audio_visual else "audio only",
             "sound-tag timeline on" if tags else "no tag head (--at-checkpoint)",
             f"uploads up to {max_upload_mb:g} MB"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>whisper-flamingo</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_STYLE}</style></head>
<body>
<h1>whisper-flamingo</h1>
<p id="about">{' · '.join(notes)}</p>
<form id="form">
<fieldset><legend>Input</legend>
<label>Audio or video file <input type="file" id="file" name="file"
 accept="audio/*,video/*,.wav,.flac,.mp3,.ogg,.m4a,.mp4,.mkv,.webm,.avi,.mov"></label>
<label>or <button type="button" id="record">Record</button> <span id="recorded"></span></label>
</fieldset>
<fieldset><legend>Options</legend>
<label>Language <select id="language">{langs}</select></label>
<label>Task <select id="task"><option>transcribe</option><option>translate</option></select></label>
<label>Beam <input type="number" id="beam_size" min="1" max="10" value="5" style="width:4em"></label>
<label>Noise <select id="noise">{noises}</select></label>
<label>SNR (dB) <input type="number" id="snr" value="10" step="1" style="width:5em"></label>
<span id="noise-file-row" hidden><input type="file" id="noise_file" accept="audio/*"></span>
</fieldset>
<button type="submit" id="submit">Transcribe</button>
<progress id="progress" max="1" value="0"></progress> <span id="status"></span>
</form>
<p id="error" role="alert"></p>
<div id="output" hidden>
<h2>Result</h2>
<video id="video" controls hidden></video>
<p>Decoded audio (with the noise mixed in): <audio id="player" controls></audio></p>
<p>Download: <span id="downloads"></span></p>
<div id="results"></div>
<img id="tags" alt="sound-tag timeline" hidden>
</div>
<script>{_SCRIPT}</script>
</body></html>
"""
