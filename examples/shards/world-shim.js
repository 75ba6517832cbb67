// Connects the arena page through the world, as the official client's connectionWorld does.
// The page opens `ws://host/parties/main/<room>?...`; this asks the world for a shard of
// <room> (`POST /parties/world/<world>/connect`) and opens `/parties/shard/<shard url>?...`
// with the same query instead. Every reconnection asks the world again, so a client whose
// shard was drained or removed lands on a live one. `?world=world-eu` picks the world.
(() => {
  'use strict';
  const Native = window.WebSocket;
  const worldId = new URLSearchParams(location.search).get('world') || 'world-default';
  class WorldSocket {
    constructor(url, protocols) {
      this._ws = null;
      this._closed = false;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      const target = new URL(url, location.href);
      const m = target.pathname.match(/^\/parties\/main\/([^/]+)\/?$/);
      if (!m) {
        this._attach(new Native(url, protocols));
        return;
      }
      const roomId = decodeURIComponent(m[1]);
      fetch('/parties/world/' + encodeURIComponent(worldId) + '/connect', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ roomId, autoCreate: true }),
      })
        .then((r) => r.json().then((body) => {
          if (!r.ok || !body.url || !body.shardId) throw new Error(body.error || 'HTTP ' + r.status);
          return body;
        }))
        .then((shard) => {
          if (this._closed) return;
          window.partyroomShard = shard.shardId;
          document.body.dataset.shard = shard.shardId;
          target.pathname = '/parties/shard/' + encodeURIComponent(shard.url);
          this._attach(new Native(target.toString(), protocols));
        })
        .catch((err) => {
          console.warn('world connect failed: ' + err.message);
          this._fail();
        });
    }
    _attach(ws) {
      this._ws = ws;
      ws.onopen = (e) => this.onopen && this.onopen(e);
      ws.onmessage = (e) => this.onmessage && this.onmessage(e);
      ws.onerror = (e) => this.onerror && this.onerror(e);
      ws.onclose = (e) => this.onclose && this.onclose(e);
    }
    _fail() {
      if (this._closed) return;
      this._closed = true;
      const e = { code: 1006, reason: 'world unavailable', wasClean: false };
      if (this.onerror) this.onerror(e);
      if (this.onclose) this.onclose(e);
    }
    get readyState() {
      if (this._ws) return this._ws.readyState;
      return this._closed ? 3 : 0;
    }
    send(data) {
      if (!this._ws) throw new Error('WebSocket is not open');
      this._ws.send(data);
    }
    close(code, reason) {
      this._closed = true;
      if (this._ws) this._ws.close(code, reason);
    }
  }
  WorldSocket.CONNECTING = 0;
  WorldSocket.OPEN = 1;
  WorldSocket.CLOSING = 2;
  WorldSocket.CLOSED = 3;
  window.WebSocket = WorldSocket;
})();
