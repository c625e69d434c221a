import assert from 'node:assert/strict';
import { after, test as nodeTest } from 'node:test';

import { ApiError, SendError } from '../src/index.js';
import { msgpackCodec } from '../src/msgpack.js';
import { client, EXPIRING, friends, once, PASSWORD, Proxy, SERVER, signup, sleep, until } from './helpers.js';

/** Each test within its own bound, so a lost message fails it instead of hanging the run. */
const test = (name, fn) => nodeTest(name, { timeout: 30000 }, fn);

const fast = { backoff: { initialMs: 40, maxMs: 400 } };
const clients = [];
/** A client that is closed when the tests end. */
function open(...args) {
  const c = client(...args);
  clients.push(c);
  c.connect();
  return c;
}
after(() => clients.forEach((c) => c.close()));

/** Every `message` event of `c`, in the order they came. */
function record(c) {
  const got = [];
  c.on('message', (m) => got.push(m));
  return got;
}

test('a send whose ack was lost is stored once after the reconnect resends it', async () => {
  const [a, b, chat] = await friends();
  const proxy = await Proxy.start();
  const alice = open(a, proxy.url, fast);
  alice.track(chat, 0);
  const seen = record(alice);
  await once(alice, 'state', (s) => s.state === 'open');
  proxy.mute = true; // the server stores the message; its ack never reaches alice
  const sent = alice.send(chat, 'hello once');
  await until(async () => (await b.history(chat)).messages.length === 1, 'the message to be stored');
  assert.equal(alice.outbox.size, 1, 'no ack came, so the send waits in the outbox');
  proxy.mute = false;
  proxy.cut();
  const message = await sent;
  const { messages } = await b.history(chat);
  assert.deepEqual(messages.map((m) => m.body), ['hello once'], 'stored once');
  assert.equal(message.id, messages[0].id, 'the ack is the stored message');
  assert.deepEqual(seen.map((m) => m.seq), [1], 'and it reached alice once');
  assert.equal(alice.outbox.size, 0);
  await proxy.stop();
});

test('a reconnect while another client sends yields every message once and in order', async () => {
  const [a, b, chat] = await friends();
  const proxy = await Proxy.start();
  const bob = open(b, proxy.url, fast);
  bob.track(chat, 0);
  const seen = record(bob);
  await once(bob, 'state', (s) => s.state === 'open');
  const alice = open(a);
  await once(alice, 'state', (s) => s.state === 'open');
  const total = 150;
  let cuts = 0;
  for (let i = 1; i <= total; i += 1) {
    await alice.send(chat, `m${i}`);
    if (i % 40 === 0) {
      proxy.cut();
      cuts += 1;
    }
  }
  await until(() => seen.length >= total, `${total} messages at bob`);
  await sleep(200);
  assert.equal(cuts, 3);
  assert.deepEqual(
    seen.map((m) => m.seq),
    Array.from({ length: total }, (_, i) => i + 1),
    'every seq once, in order',
  );
  assert.deepEqual(seen.map((m) => m.body), Array.from({ length: total }, (_, i) => `m${i + 1}`));
  assert.equal(bob.positions.get(chat), total);
  await proxy.stop();
});

test('backoff grows while the server is unreachable and resets after a connection', async () => {
  const api = await signup();
  const proxy = await Proxy.start();
  proxy.refuse = true;
  const c = open(api, proxy.url, { backoff: { initialMs: 40, maxMs: 400, factor: 2 } });
  const waits = [];
  c.on('reconnecting', (r) => waits.push(r));
  await until(() => waits.length >= 6, 'six reconnect attempts');
  for (const { attempt, delay } of waits.slice(0, 6)) {
    const base = Math.min(400, 40 * 2 ** (attempt - 1));
    assert.ok(delay >= base / 2 && delay <= base, `attempt ${attempt}: ${delay} ms within [${base / 2}, ${base}]`);
  }
  assert.ok(waits[4].delay > waits[0].delay * 3, 'later waits are longer');
  proxy.refuse = false;
  await once(c, 'state', (s) => s.state === 'open');
  waits.length = 0;
  proxy.cut();
  await until(() => waits.length >= 1, 'a reconnect after the cut');
  assert.equal(waits[0].attempt, 1, 'the count starts again');
  assert.ok(waits[0].delay <= 40, `the first wait again: ${waits[0].delay}`);
  await proxy.stop();
});

test('a logged-out token is not reconnected', async () => {
  const api = await signup();
  const c = open(api, SERVER, fast);
  await once(c, 'state', (s) => s.state === 'open');
  const closed = once(c, 'state', (s) => s.state === 'closed');
  await api.logout();
  assert.deepEqual(await closed, { state: 'closed', reason: 'revoked', code: 4002 });
  await sleep(300);
  assert.equal(c.state, 'closed', 'no reconnect');
});

test('a refused token is refreshed through the callback, or the client stops', async () => {
  const api = await signup();
  const stuck = open({ token: 'not-a-token' }, SERVER, fast);
  const stopped = await once(stuck, 'state', (s) => s.state === 'closed');
  assert.equal(stopped.reason, 'unauthorized');
  let asked = 0;
  const refreshed = open({ token: 'not-a-token' }, SERVER, {
    ...fast,
    refreshToken: async () => {
      asked += 1;
      return api.token;
    },
  });
  await once(refreshed, 'state', (s) => s.state === 'open');
  assert.equal(asked, 1);
  assert.equal(refreshed.token, api.token);
});

test('after token expiry (4001) the client reconnects with a token from refreshToken, or stops', async () => {
  const api = await signup('exp', EXPIRING);
  let asked = 0;
  const c = open(api, EXPIRING, {
    ...fast,
    refreshToken: async () => {
      asked += 1;
      return (await api.login(api.user.username, PASSWORD)).token;
    },
  });
  const expired = once(c, 'disconnect', (d) => d.code === 4001);
  await once(c, 'state', (s) => s.state === 'open');
  await expired;
  await once(c, 'state', (s) => s.state === 'open');
  assert.ok(asked >= 1, 'the callback gave the new token');
  assert.equal(c.token, api.token, 'and the client uses it');

  const plain = open(await signup('exp', EXPIRING), EXPIRING, fast);
  const stopped = await once(plain, 'state', (s) => s.state === 'closed');
  assert.deepEqual(stopped, { state: 'closed', reason: 'expired', code: 4001 });
});

test('a send the server refuses for good rejects and leaves the outbox', async () => {
  const api = await signup();
  const c = open(api);
  await once(c, 'state', (s) => s.state === 'open');
  await assert.rejects(c.send(999999, 'nowhere'), (e) => e instanceof SendError && e.code === 'not_found');
  assert.equal(c.outbox.size, 0);
  await assert.rejects(api.chat(999999), (e) => e instanceof ApiError && e.status === 404 && e.code === 'not_found');
});

test('MessagePack and JSON clients share a chat, and a new chat is followed from its start', async () => {
  const [a, b] = await friends();
  const alice = open(a, SERVER, { codec: msgpackCodec });
  const bob = open(b);
  await Promise.all([alice, bob].map((c) => once(c, 'state', (s) => s.state === 'open')));
  const seen = record(bob);
  const added = once(bob, 'chat', (c) => c.title === 'packed');
  const { chat } = await a.createGroup('packed', [b.user.id]);
  await added;
  await alice.send(chat.id, 'über msgpack');
  await until(() => seen.length === 1, 'bob to receive it');
  assert.equal(seen[0].body, 'über msgpack');
  assert.equal(seen[0].sender_id, a.user.id);
  assert.ok(await bob.ping() >= 0);
});

test('history pages backwards in ascending order', async () => {
  const [a, , chat] = await friends();
  for (let i = 1; i <= 7; i += 1) await a.sendMessage(chat, `h${i}`);
  const newest = await a.history(chat, { beforeSeq: 8, limit: 3 });
  assert.deepEqual(newest.messages.map((m) => m.seq), [5, 6, 7]);
  const older = await a.history(chat, { beforeSeq: 5, limit: 3 });
  assert.deepEqual(older.messages.map((m) => m.seq), [2, 3, 4]);
  const { chat: view } = await a.chat(chat);
  assert.equal(view.unread, 0, 'her own messages are read');
});

test("the README's echo bot befriends and answers", async () => {
  const { spawn } = await import('node:child_process');
  const { readFile } = await import('node:fs/promises');
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const example = await readFile(new URL('../examples/echo-bot.js', import.meta.url), 'utf8');
  const shown = /```js\n([\s\S]*?)```/.exec(readme)[1];
  assert.equal(shown, example.replace(/^(\/\/.*\n)+/, ''), 'the README shows the example as it is');
  const bot = spawn(process.execPath, [new URL('../examples/echo-bot.js', import.meta.url).pathname, SERVER], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await new Promise((resolve) => bot.stdout.on('data', (d) => String(d).includes('open') && resolve()));
    const me = await signup('fan');
    await me.requestFriend('echo-bot');
    const friendsOfMine = async () => (await me.friends()).friends.map((f) => f.username);
    await until(async () => (await friendsOfMine()).includes('echo-bot'), 'the bot to accept');
    const botId = (await me.friends()).friends[0].id;
    const { chat } = await me.directChat(botId);
    const c = open(me);
    c.track(chat.id, 0);
    const seen = record(c);
    await c.send(chat.id, 'marco');
    await until(() => seen.some((m) => m.body === 'echo: marco'), 'the echo');
    assert.deepEqual(seen.map((m) => m.body), ['marco', 'echo: marco']);
  } finally {
    bot.kill();
  }
});

test('positions of more chats than one resume may name are resumed in several frames', async () => {
  const [a, b, chat] = await friends();
  await a.sendMessage(chat, 'one');
  // 1,500 positions: the real chat among chats that do not exist (each answered not_found).
  const positions = Object.fromEntries(Array.from({ length: 1500 }, (_, i) => [900000 + i, 0]));
  positions[chat] = 0;
  const c = client(b, SERVER, { positions });
  clients.push(c);
  const seen = record(c);
  const synced = once(c, 'synced', (s) => s.chat_id === chat);
  c.connect();
  await synced;
  assert.deepEqual(seen.map((m) => m.body), ['one']);
});
