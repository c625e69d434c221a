// The restore drill's clients. `before URL`: two friends, five messages, and the receiver's
// position and epoch after them; prints them as JSON. `more URL STATE`: five more messages.
// `after URL STATE`: against the restored history, the receiver (as the JavaScript library, with
// the position and epoch it had) resumes, three new messages are sent, and it must get them.
import { Api, Client } from '../../clients/js/src/index.js';
import WebSocket from '../../clients/node_modules/ws/index.js';

const [mode, url, stateFile] = process.argv.slice(2);
const fs = await import('node:fs');
const until = async (test, what) => {
  const end = Date.now() + 20000;
  while (!test()) {
    if (Date.now() > end) throw new Error(`drill: no ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

if (mode === 'before') {
  const a = new Api(url);
  const b = new Api(url);
  await a.signup(`rs${process.pid}`, 'correct horse battery');
  const { user: bu } = await b.signup(`rr${process.pid}`, 'correct horse battery');
  const { request } = await a.requestFriend(bu.username);
  await b.answerRequest(request.id, 'accept');
  const { chat } = await a.directChat(bu.id);
  for (let i = 1; i <= 5; i += 1) await a.sendMessage(chat.id, `before the backup point ${i}`);
  console.log(JSON.stringify({ a: [a.token, a.refreshToken], b: [b.token, b.refreshToken], chat: chat.id }));
} else {
  const state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  const a = new Api(url, { token: state.a[0], refreshToken: state.a[1] });
  const b = new Api(url, { token: state.b[0], refreshToken: state.b[1] });
  if (mode === 'more') {
    const receiver = new Client({ url, api: b, WebSocket, positions: { [state.chat]: 0 } });
    const seen = [];
    receiver.on('message', (m) => seen.push(m.seq));
    receiver.connect();
    await until(() => receiver.state === 'open', 'open socket');
    for (let i = 6; i <= 10; i += 1) await a.sendMessage(state.chat, `after the backup point ${i}`);
    await until(() => seen.length === 10, 'ten messages at the receiver');
    receiver.close();
    console.log(JSON.stringify({ ...state, position: receiver.positions.get(state.chat), epoch: receiver.epoch }));
  } else {
    const receiver = new Client({ url, api: b, WebSocket, positions: { [state.chat]: state.position }, epoch: state.epoch });
    const rewinds = [];
    const seen = [];
    receiver.on('rewound', (r) => rewinds.push(r));
    receiver.on('message', (m) => seen.push(m));
    receiver.connect();
    await until(() => receiver.state === 'open' && rewinds.length > 0, 'rewound frame');
    for (let i = 1; i <= 3; i += 1) await a.sendMessage(state.chat, `after the restore ${i}`);
    await until(() => seen.length === 3, 'three new messages at the receiver');
    receiver.close();
    console.log(JSON.stringify({
      epoch_before: state.epoch,
      epoch_after: receiver.epoch,
      position_before: state.position,
      rewound_to: rewinds[0].seq,
      received: seen.map((m) => `${m.seq}:${m.body}`),
    }));
  }
}
process.exit(0);
