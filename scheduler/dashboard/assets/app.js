// spool-dashboard: live fragments over server-sent events, and the player.
// No framework and no build step: this file is served as it is.
(function () {
  'use strict';

  // When this document was loaded: a live update leaves it unchanged, a
  // reload does not (the browser tests read it).
  window.spoolLoadedAt = Date.now();

  function startLive() {
    var url = document.body.dataset.sse;
    var dot = document.getElementById('live');
    if (!url || !window.EventSource) {
      return;
    }
    var source = new EventSource(url);
    source.addEventListener('open', function () {
      if (dot) { dot.classList.add('on'); }
    });
    source.addEventListener('error', function () {
      if (dot) { dot.classList.remove('on'); }
    });
    source.addEventListener('fragment', function (event) {
      var fragment = JSON.parse(event.data);
      var target = document.getElementById(fragment.id);
      if (!target) { return; }
      // The server rendered and escaped this HTML (maud), as it did the page.
      target.innerHTML = fragment.html;
      var count = Number(document.body.dataset.updates || 0) + 1;
      document.body.dataset.updates = String(count);
    });
    window.addEventListener('beforeunload', function () { source.close(); });
  }

  function startPlayer(box) {
    var video = document.getElementById('video');
    var state = document.getElementById('player-state');
    var format = document.getElementById('format');
    var rendition = document.getElementById('rendition');
    if (!window.shaka || !video) { return; }
    window.shaka.polyfill.installAll();
    if (!window.shaka.Player.isBrowserSupported()) {
      state.textContent = 'this browser cannot play adaptive streams';
      return;
    }
    var player = new window.shaka.Player();
    window.spoolPlayer = player;
    player.addEventListener('error', function (event) {
      box.dataset.error = String(event.detail && event.detail.code);
      state.textContent = 'error ' + box.dataset.error;
    });

    function fillRenditions() {
      while (rendition.options.length > 1) { rendition.remove(1); }
      var seen = {};
      player.getVariantTracks()
        .slice()
        .sort(function (a, b) { return (b.height || 0) - (a.height || 0); })
        .forEach(function (track) {
          var key = String(track.height || track.bandwidth);
          if (seen[key]) { return; }
          seen[key] = true;
          var option = document.createElement('option');
          option.value = String(track.id);
          option.textContent = (track.height ? track.height + 'p, ' : '') +
            Math.round(track.bandwidth / 1000) + ' kb/s';
          rendition.appendChild(option);
        });
    }

    function load() {
      var kind = format.value;
      var url = kind === 'hls' ? box.dataset.hls : box.dataset.dash;
      delete box.dataset.loaded;
      delete box.dataset.error;
      state.textContent = 'loading ' + kind + '…';
      return player.load(url).then(function () {
        box.dataset.loaded = kind;
        state.textContent = kind.toUpperCase() + ' loaded';
        fillRenditions();
        return video.play().catch(function () { /* autoplay refused: the controls remain */ });
      }).catch(function (error) {
        box.dataset.error = String(error && error.code);
        state.textContent = 'cannot load ' + kind + ': ' + box.dataset.error;
      });
    }

    format.addEventListener('change', load);
    rendition.addEventListener('change', function () {
      if (rendition.value === 'auto') {
        player.configure({ abr: { enabled: true } });
        box.dataset.rendition = 'auto';
        return;
      }
      player.configure({ abr: { enabled: false } });
      var track = player.getVariantTracks().filter(function (t) {
        return String(t.id) === rendition.value;
      })[0];
      if (track) {
        player.selectVariantTrack(track, true);
        box.dataset.rendition = String(track.height || '');
      }
    });
    player.attach(video).then(load);
  }

  function start() {
    startLive();
    var box = document.querySelector('.player');
    if (box) { startPlayer(box); }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
}());
