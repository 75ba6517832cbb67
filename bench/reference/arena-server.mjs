// Reference arena server: the ORIGINAL `@signe/room` running the arena game.
//
// This is a faithful plain-JavaScript transcription of the package's own Node
// game example (node_modules/@signe/room/examples/node-game/{room.ts,server.ts}),
// so that partyroom and the original can be benchmarked with the same load tool
// and so that partyroom's Node compatibility suite (tests/compat) can be run
// against the original.
//
// Decorators: @signe/room and @signe/sync are legacy TypeScript decorators
// ("experimentalDecorators"). The package itself is compiled by esbuild/tsup,
// which turns them into constructor assignments for fields plus
// `__decorateClass(decorators, target, key, kind)` calls after the class
// (see node_modules/@signe/room/dist/chunk-*.js). This file does exactly the
// same by hand with the same helper, so no build step is needed:
//   - fields are assigned in the constructor (`this.x = signal(-1)`), NOT
//     declared as JS class fields: a class field would [[Define]] an own
//     property and bypass the accessor that `@sync()` installs on the prototype;
//   - property decorators: decorate([sync()], Player.prototype, 'x', 2);
//   - method decorators:   decorate([Action('move', schema)], Arena.prototype, 'move', 1);
//   - class decorator:     Arena = decorate([Room({...})], Arena);
//
// Usage: node arena-server.mjs [--port <n>] [--host <addr>] [--sync-throttle-ms <n>]
//   --port 0 picks a free port. Once listening, prints exactly
//   `partyroom listening on http://127.0.0.1:<port>` on stdout (the line our
//   tools parse). Storage is the in-memory provider (`node:sqlite` needs
//   Node >= 22.5; this machine has Node 20).
//
// The ONLY deviation from the original example is in the upgrade handler
// below: when the WebSocket URL has no `id` query parameter but has `_pk`
// (what the official `@signe/sync/client` / partysocket sends), `_pk` is
// copied into `id` before the request is handed to the transport, because the
// Node adapter reads the private session id from `id` only.

import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { z } from 'zod';
import { signal } from '@signe/reactive';
import { Action, Request, Room, Server } from '@signe/room';
import { createMemoryNodeRoomStorage, createNodeRoomTransport } from '@signe/room/node';
import { connected, sync, users } from '@signe/sync';

// Same helper as esbuild's `__decorateClass` (legacy/experimental decorators).
// kind: 0 = class, 1 = method, 2 = property.
function decorate(decorators, target, key, kind) {
  let result = kind > 1 ? undefined : kind ? Object.getOwnPropertyDescriptor(target, key) : target;
  for (let i = decorators.length - 1; i >= 0; i--) {
    const decorator = decorators[i];
    if (decorator) result = (kind ? decorator(target, key, result) : decorator(result)) || result;
  }
  if (kind && result) Object.defineProperty(target, key, result);
  return result;
}

// ---------------------------------------------------------------------------
// room.ts
// ---------------------------------------------------------------------------

const ARENA_WIDTH = 900;
const ARENA_HEIGHT = 560;
const PLAYER_RADIUS = 16;
const STAR_RADIUS = 13;
const COLLECT_DISTANCE = PLAYER_RADIUS + STAR_RADIUS + 8;

class Player {
  constructor() {
    this.name = signal('Anonymous');
    this.connected = signal(false);
    this.x = signal(-1);
    this.y = signal(-1);
    this.color = signal('#2563eb');
    this.score = signal(0);
  }
}
decorate([sync()], Player.prototype, 'name', 2);
decorate([connected()], Player.prototype, 'connected', 2);
decorate([sync()], Player.prototype, 'x', 2);
decorate([sync()], Player.prototype, 'y', 2);
decorate([sync()], Player.prototype, 'color', 2);
decorate([sync()], Player.prototype, 'score', 2);

let GameRoom = class GameRoom {
  constructor() {
    this.star = signal(randomPoint());
    this.players = signal({});
  }

  onJoin(player, _conn, ctx) {
    const url = new URL(ctx.request?.url ?? 'http://localhost');
    const name = url.searchParams.get('name')?.trim();

    if (name) {
      player.name.set(name.slice(0, 40));
    }

    if (player.x() < 0 || player.y() < 0) {
      const point = randomPoint();
      player.x.set(point.x);
      player.y.set(point.y);
      player.color.set(colorFromName(player.name()));
    }
  }

  move(player, value) {
    player.x.set(clamp(value.x, PLAYER_RADIUS, ARENA_WIDTH - PLAYER_RADIUS));
    player.y.set(clamp(value.y, PLAYER_RADIUS, ARENA_HEIGHT - PLAYER_RADIUS));
  }

  collect(player) {
    const distance = getDistance(player.x(), player.y(), this.star().x, this.star().y);

    if (distance > COLLECT_DISTANCE) {
      return;
    }

    player.score.update((score) => score + 1);
    this.star.set(randomPoint());
  }

  getState() {
    return this.snapshot();
  }

  reset() {
    for (const player of Object.values(this.players())) {
      player.score.set(0);
    }

    this.star.set(randomPoint());
    return this.snapshot();
  }

  snapshot() {
    return {
      arena: {
        width: ARENA_WIDTH,
        height: ARENA_HEIGHT,
      },
      star: this.star(),
      players: Object.fromEntries(
        Object.entries(this.players()).map(([id, player]) => [
          id,
          {
            name: player.name(),
            connected: player.connected(),
            x: player.x(),
            y: player.y(),
            color: player.color(),
            score: player.score(),
          },
        ]),
      ),
    };
  }
};
decorate([sync()], GameRoom.prototype, 'star', 2);
decorate([users(Player)], GameRoom.prototype, 'players', 2);
decorate([Action('move', z.object({ x: z.number(), y: z.number() }))], GameRoom.prototype, 'move', 1);
decorate([Action('collect', z.object({}))], GameRoom.prototype, 'collect', 1);
decorate([Request({ path: '/state' })], GameRoom.prototype, 'getState', 1);
decorate([Request({ path: '/reset', method: 'POST' })], GameRoom.prototype, 'reset', 1);
// `--sync-throttle-ms <n>` (benchmarks only) sets the room's `throttleSync`; the example has none.
const opts = parseArgs(process.argv.slice(2));
const roomOptions = { path: '{roomId}', sessionExpiryTime: 2000, throttleStorage: 2500 };
if (opts.syncThrottleMs > 0) roomOptions.throttleSync = opts.syncThrottleMs;
GameRoom = decorate([Room(roomOptions)], GameRoom, undefined, 0);

class GameServer extends Server {
  constructor(...args) {
    super(...args);
    this.rooms = [GameRoom];
  }
}

function randomPoint() {
  return {
    x: randomInt(PLAYER_RADIUS + 20, ARENA_WIDTH - PLAYER_RADIUS - 20),
    y: randomInt(PLAYER_RADIUS + 20, ARENA_HEIGHT - PLAYER_RADIUS - 20),
  };
}

function randomInt(min, max) {
  return Math.floor(Math.random() * (max - min + 1)) + min;
}

function clamp(value, min, max) {
  return Math.min(max, Math.max(min, value));
}

function getDistance(ax, ay, bx, by) {
  return Math.hypot(ax - bx, ay - by);
}

function colorFromName(name) {
  const colors = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#be123c', '#4f46e5'];
  let hash = 0;

  for (let index = 0; index < name.length; index += 1) {
    hash = (hash * 31 + name.charCodeAt(index)) >>> 0;
  }

  return colors[hash % colors.length];
}

// ---------------------------------------------------------------------------
// server.ts
// ---------------------------------------------------------------------------

function parseArgs(argv) {
  const opts = { port: Number(process.env.PORT ?? 3000), host: '127.0.0.1', syncThrottleMs: 0 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`missing value for ${arg}`);
      return v;
    };
    if (arg === '--port') opts.port = Number(value());
    else if (arg.startsWith('--port=')) opts.port = Number(arg.slice(7));
    else if (arg === '--host') opts.host = value();
    else if (arg === '--sync-throttle-ms') opts.syncThrottleMs = Number(value());
    else if (arg.startsWith('--host=')) opts.host = arg.slice(7);
    else if (arg === '--memory') {
      // Accepted for command-line compatibility with partyroom's arena binary;
      // storage is always in memory here.
    } else if (arg === '-h' || arg === '--help') {
      process.stdout.write('usage: node arena-server.mjs [--port <n>] [--host <addr>] [--sync-throttle-ms <n>]\n');
      process.exit(0);
    } else {
      throw new Error(`unknown argument: ${arg}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new Error('--port must be an integer in [0, 65535]');
  }
  return opts;
}

// The game page shipped with the installed package's example.
// ('@signe/room' resolves to <package>/dist/index.js; its exports map hides package.json.)
const roomPackageDir = dirname(dirname(fileURLToPath(import.meta.resolve('@signe/room'))));
const pagePath = join(roomPackageDir, 'examples/node-game/public/index.html');

const storage = createMemoryNodeRoomStorage();

const transport = createNodeRoomTransport(GameServer, {
  partiesPath: '/parties/main',
  storage,
});

const server = createServer(async (req, res) => {
  if (req.url?.startsWith('/parties/main/')) {
    await transport.handleNodeRequest(req, res);
    return;
  }

  if (req.url === '/' || req.url === '/index.html' || req.url?.startsWith('/rooms/')) {
    const html = await readFile(pagePath, 'utf8');
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(html);
    return;
  }

  res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end('Not Found');
});

const wsServer = new WebSocketServer({ noServer: true });

server.on('upgrade', (request, socket, head) => {
  if (request.url?.startsWith('/parties/main/')) {
    // DEVIATION from the original example (the only one): the Node adapter
    // (`getConnectionIdFromUrl` in @signe/room/dist/node) takes the private
    // session id from the `id` query parameter only, while the official
    // client (`@signe/sync/client` over partysocket) sends it as `_pk`.
    // partyroom accepts both, so to compare like with like we copy `_pk`
    // into `id` when `id` is missing or empty, then hand the upgrade to the
    // transport unchanged.
    const queryStart = request.url.indexOf('?');
    if (queryStart >= 0) {
      const params = new URLSearchParams(request.url.slice(queryStart + 1));
      const pk = params.get('_pk');
      if (!params.get('id')?.trim() && pk) {
        params.set('id', pk);
        // Keep the raw (still percent-encoded) path exactly as received.
        request.url = `${request.url.slice(0, queryStart)}?${params}`;
      }
    }
    transport.handleUpgrade(wsServer, request, socket, head);
    return;
  }

  socket.destroy();
});

server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  process.stdout.write(`partyroom listening on http://${opts.host}:${port}\n`);
});

