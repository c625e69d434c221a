// Traffic for the failover drill: CLIENTS pairs of users, each sender sending one message every
// INTERVAL ms for SECONDS through the JavaScript library (which resends what was not acked) and
// each receiver recording its stream. Prints, as JSON, every acked message's client_msg_id and
// the time of each ack, and each receiver's seqs, for the drill to check.
import { Api, Client } from '../../clients/js/src/index.js';
import WebSocket from '../../clients/node_modules/ws/index.js';

const [url, clients, seconds, interval] = process.argv.slice(2);
const acked = [];
const streams = [];
const pairs = [];
for (let i = 0; i < Number(clients); i += 1) {
  const tag = `${process.pid}x${i}`;
  const a = new Api(url);
  const b = new Api(url);
  await a.signup(`ds${tag}`, 'correct horse battery');
  const { user: bu } = await b.signup(`dr${tag}`, 'correct horse battery');
  const { request } = await a.requestFriend(bu.username);
  await b.answerRequest(request.id, 'accept');
  const { chat } = await a.directChat(bu.id);
  const sender = new Client({ url, api: a, WebSocket, backoff: { initialMs: 100, maxMs: 1000 } });
  const receiver = new Client({ url, api: b, WebSocket, positions: { [chat.id]: 0 }, backoff: { initialMs: 100, maxMs: 1000 } });
  const seqs = [];
  receiver.on('message', (m) => seqs.push(m.seq));
  streams.push({ chat: chat.id, seqs });
  sender.connect();
  receiver.connect();
  pairs.push({ sender, receiver, chat: chat.id });
}
const end = Date.now() + Number(seconds) * 1000;
const pending = [];
while (Date.now() < end) {
  for (const { sender, chat } of pairs) {
    pending.push(
      sender.send(chat, `drill ${Date.now()}`).then(
        (m) => acked.push({ id: m.client_msg_id, chat, seq: m.seq, at: Date.now() }),
        () => {},
      ),
    );
  }
  await new Promise((r) => setTimeout(r, Number(interval)));
}
// Unacked sends are still resent by the library: give them time to land.
await Promise.race([Promise.all(pending), new Promise((r) => setTimeout(r, 30000))]);
await new Promise((r) => setTimeout(r, 2000));
for (const { sender, receiver } of pairs) {
  sender.close();
  receiver.close();
}
console.log(JSON.stringify({ acked, streams }));
process.exit(0);
