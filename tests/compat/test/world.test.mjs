// The official client's connectionWorld against the `shards` example (world service, arena
// rooms and shard gateway on one port), unchanged: it asks the world for a shard with
// `POST {host}/parties/world/<worldId>/connect`, then opens
// `ws://{host}/parties/shard/<url>?_pk=<id>&...` with partysocket, and plays the arena there.
//
// SHARDS_BIN must be the `shards` binary (cargo build -p partyroom-shards); each run starts
// it as `$SHARDS_BIN --port 0 --stats-interval-ms 200` with AUTH_JWT_SECRET and
// SHARD_SECRET set, and mints admin tokens (HS256) with the same secret.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { connectionWorld } from '@signe/sync/client';

import {
  PID_RE,
  uniqueRoomId,
  uniqueSessionId,
  eventually,
  sleep,
  clone,
  httpJson,
  clampToArena,
  playerProblems,
} from './helpers.mjs';

const TEST_TIMEOUT = 30_000;
const JWT_SECRET = 'compat-jwt-secret';
const SHARD_SECRET = 'compat-shard-secret';

let server;
const openClients = new Set();

async function startShards() {
  const bin = process.env.SHARDS_BIN;
  if (!bin) throw new Error('SHARDS_BIN is not set: the path to the `shards` binary (cargo build -p partyroom-shards)');
  const proc = spawn(bin, ['--port', '0', '--stats-interval-ms', '200'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, AUTH_JWT_SECRET: JWT_SECRET, SHARD_SECRET, NO_COLOR: '1', PORT: '' },
  });
  let log = '';
  createInterface({ input: proc.stderr }).on('line', (l) => {
    log += `${l}\n`;
    if (process.env.COMPAT_VERBOSE) process.stderr.write(`[shards] ${l}\n`);
  });
  let exited = false;
  const exit = new Promise((resolve) => proc.once('exit', () => { exited = true; resolve(); }));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`shards did not start:\n${log}`)), 20_000);
    createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(line);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    exit.then(() => { clearTimeout(timer); reject(new Error(`shards exited:\n${log}`)); });
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    log: () => log,
    assertAlive() { if (exited) throw new Error(`shards died:\n${log.slice(-4000)}`); },
    async stop() {
      if (exited) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
      await exit;
      clearTimeout(t);
    },
  };
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 admin token, as an operator would mint it. */
function adminToken(worlds, ttlSeconds = 60) {
  const now = Math.floor(Date.now() / 1000);
  const head = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ worlds, iat: now, exp: now + ttlSeconds })}`;
  return `${head}.${createHmac('sha256', JWT_SECRET).update(head).digest('base64url')}`;
}

before(async () => {
  server = await startShards();
});

afterEach(async () => {
  for (const c of openClients) c.close();
  openClients.clear();
  await sleep(50);
  server?.assertAlive();
});

after(async () => {
  await server?.stop();
});

/** Join a logical room through the world with the official client. */
async function joinWorld(roomId, { id = uniqueSessionId(), name, worldId, room = {} } = {}) {
  const packets = [];
  const options = {
    host: server.url,
    room: roomId,
    id,
    query: name === undefined ? undefined : { name },
    WebSocket,
    maxRetries: 0,
    retryCount: 1,
  };
  if (worldId) options.worldId = worldId;
  const client = await connectionWorld(options, room);
  client.on('sync', (value) => packets.push(value));
  openClients.add(client);
  await eventually(() => PID_RE.test(room.pId ?? '') && room.players?.[room.pId], 5_000, {
    message: `connectionWorld client in ${roomId} receives its pId and player`,
  });
  return {
    client,
    room,
    packets,
    id,
    get pId() { return room.pId; },
    get me() { return room.players?.[room.pId]; },
    close() { openClients.delete(client); client.close(); },
  };
}

test('connectionWorld gets a shard from the world and plays the arena through it', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId('world');
  const a = await joinWorld(roomId, { name: 'Alice' });
  const { shardId, url } = a.client.shardInfo;
  assert.match(shardId, new RegExp(`^${roomId}:world-default:[0-9a-z-]+$`));
  assert.equal(url, shardId);
  assert.equal(a.client.conn.url, `ws://127.0.0.1:${server.port}/parties/shard/${url}?_pk=${a.id}&name=Alice`);
  assert.deepEqual(playerProblems(a.me), []);
  assert.equal(a.me.name, 'Alice');
  assert.equal(a.me.connected, true);

  // Move onto the star and collect it.
  const target = clampToArena(clone(a.room.star));
  a.client.emit('move', target);
  await eventually(() => a.me?.x === target.x && a.me?.y === target.y, 5_000, { message: 'moved onto the star' });
  a.client.emit('collect');
  await eventually(() => a.me?.score === 1, 5_000, { message: 'score 1 after collect' });

  // A second client through the world lands in the same room and sees Alice.
  const b = await joinWorld(roomId, { name: 'Bob' });
  assert.equal(b.room.players[a.pId]?.name, 'Alice');
  assert.equal(b.room.players[a.pId]?.score, 1);
  b.client.emit('move', { x: 100, y: 200 });
  await eventually(() => a.room.players[b.pId]?.x === 100 && a.room.players[b.pId]?.y === 200, 5_000, {
    message: "Alice sees Bob's move",
  });

  // The same room over HTTP through the shard (its own path, not the shard's).
  const state = await httpJson(server.url, `/parties/shard/${shardId}/state`);
  assert.equal(state.status, 200);
  assert.equal(state.body.players[a.pId].score, 1);

  // The shard reported its two sockets to the world (admins only).
  const path = `/parties/world/world-default/shards?roomId=${roomId}`;
  assert.equal((await httpJson(server.url, path)).status, 401);
  await eventually(async () => {
    const r = await httpJson(server.url, path, { headers: { Authorization: `Bearer ${adminToken(['world-default'])}` } });
    return r.status === 200 && r.body.shards[shardId]?.currentConnections === 2;
  }, 5_000, { message: 'the world counts 2 connections on the shard' });
});

test('the same session through the world keeps its player', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId('world');
  const id = uniqueSessionId('W');
  const first = await joinWorld(roomId, { id, name: 'Sam' });
  const pId = first.pId;
  first.client.emit('move', { x: 300, y: 300 });
  await eventually(() => first.me?.x === 300, 5_000, { message: 'moved' });
  first.close();
  await sleep(100);
  const again = await joinWorld(roomId, { id, name: 'Sam' });
  assert.equal(again.pId, pId);
  assert.equal(again.me.x, 300);
});

test('worlds are separate: world-eu gives its own shards of the same room', { timeout: TEST_TIMEOUT }, async () => {
  const roomId = uniqueRoomId('world');
  const d = await joinWorld(roomId, { name: 'D' });
  const e = await joinWorld(roomId, { name: 'E', worldId: 'world-eu' });
  assert.match(e.client.shardInfo.shardId, new RegExp(`^${roomId}:world-eu:`));
  assert.notEqual(e.client.shardInfo.shardId, d.client.shardInfo.shardId);
  // Both shards relay the same arena room.
  await eventually(() => d.room.players[e.pId]?.name === 'E', 5_000, { message: 'D sees E' });
  const eu = await httpJson(server.url, '/parties/world/world-eu/shards', {
    headers: { Authorization: `Bearer ${adminToken(['world-eu'])}` },
  });
  assert.equal(eu.status, 200);
  assert.deepEqual(Object.keys(eu.body.shards).filter((k) => k.startsWith(roomId)), [e.client.shardInfo.shardId]);
  const denied = await httpJson(server.url, '/parties/world/world-eu/shards', {
    headers: { Authorization: `Bearer ${adminToken(['world-default'])}` },
  });
  assert.equal(denied.status, 403);
});

test("the world's refusals reach connectionWorld as errors", { timeout: TEST_TIMEOUT }, async () => {
  await assert.rejects(
    connectionWorld({ host: server.url, room: 'bad.name', WebSocket, retryCount: 1, maxRetries: 0 }, {}),
    /World service returned 400: Invalid roomId/,
  );
  await assert.rejects(
    connectionWorld({ host: server.url, room: 'ghost-room', autoCreate: false, WebSocket, retryCount: 1, maxRetries: 0 }, {}),
    /World service returned 404: Room ghost-room does not exist/,
  );
  await assert.rejects(
    connectionWorld({ host: server.url, room: 'x', worldId: 'world-nowhere', WebSocket, retryCount: 1, maxRetries: 0 }, {}),
    /World service returned 404: Not found/,
  );
});
