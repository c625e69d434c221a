/**
 * What the library's tests share: the server under test (started by scripts/test-clients, its
 * URL in XFCHAT_URL), fresh users, and a TCP proxy that can cut or refuse a client's
 * connections the way a network does.
 */
import net from 'node:net';
import WebSocket from 'ws';

import { Api, Client } from '../src/index.js';

export const SERVER = process.env.XFCHAT_URL;
/** A server whose tokens expire 2 s after they are made (set by scripts/test-clients). */
export const EXPIRING = process.env.XFCHAT_EXPIRING_URL;
/** A server whose users may send 5 a second, burst 10 (set by scripts/test-clients). */
export const LIMITED = process.env.XFCHAT_LIMITED_URL;
export const PASSWORD = 'correct horse battery';
if (!SERVER) throw new Error('XFCHAT_URL is not set: run these tests through scripts/test-clients');

let counter = 0;

/** A new user (a name unique to this run), signed up at `base`; returns its Api. */
export async function signup(prefix = 'u', base = SERVER) {
  counter += 1;
  const name = `${prefix}${process.pid}x${counter}x${Math.floor(Math.random() * 1e6)}`.slice(0, 32);
  const api = new Api(base);
  const { user } = await api.signup(name, PASSWORD);
  api.user = user;
  return api;
}

/** Two friends and their direct chat: [a, b, chatId]. */
export async function friends() {
  const [a, b] = [await signup('a'), await signup('b')];
  const { request } = await a.requestFriend(b.user.username);
  await b.answerRequest(request.id, 'accept');
  const { chat } = await a.directChat(b.user.id);
  return [a, b, chat.id];
}

/** A socket client of `api`'s user, through `url` (the server, or a proxy before it). */
export function client(api, url = SERVER, options = {}) {
  return new Client({ url, token: api?.token, WebSocket, ...options });
}

/** Resolves with the first event `name` of `emitter` for which `test` holds. */
export function once(emitter, name, test = () => true, ms = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${name} event within ${ms} ms`));
    }, ms);
    const off = emitter.on(name, (payload) => {
      if (!test(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `check()` is true, polling. */
export async function until(check, what, ms = 15000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A TCP proxy on an ephemeral loopback port in front of the server. `cut()` ends every open
 * connection at once, as a dropped network does; `refuse` closes new ones as soon as they
 * open; `mute` swallows what the server sends (so the server acts on a frame whose answer is
 * lost).
 */
export class Proxy {
  refuse = false;
  mute = false;
  #sockets = new Set();

  static async start() {
    const proxy = new Proxy();
    const target = new URL(SERVER);
    proxy.server = net.createServer((down) => {
      if (proxy.refuse) {
        down.destroy();
        return;
      }
      const up = net.connect(Number(target.port), target.hostname);
      proxy.#sockets.add(down).add(up);
      const end = () => {
        down.destroy();
        up.destroy();
        proxy.#sockets.delete(down);
        proxy.#sockets.delete(up);
      };
      down.on('data', (d) => up.write(d));
      up.on('data', (d) => {
        if (!proxy.mute) down.write(d);
      });
      for (const s of [down, up]) {
        s.on('error', end);
        s.on('close', end);
      }
    });
    await new Promise((r) => proxy.server.listen(0, '127.0.0.1', r));
    proxy.url = `http://127.0.0.1:${proxy.server.address().port}`;
    return proxy;
  }

  cut() {
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  async stop() {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}
