// An echo bot: logs in (signing up the first time), accepts every friend request, and answers
// each message in its chats with the same text. Run: node examples/echo-bot.js [server-url]
import WebSocket from 'ws';
import { Api, Client } from '../src/index.js';

const url = process.argv[2] ?? 'http://127.0.0.1:8080';
const api = new Api(url);
const { user } = await api.login('echo-bot', 'echo-bot-password').catch(() => api.signup('echo-bot', 'echo-bot-password'));
const acceptAll = async () => {
  for (const r of (await api.friendRequests()).incoming) await api.answerRequest(r.id, 'accept');
};
await acceptAll();
const { chats } = await api.chats();
const bot = new Client({ url, api, WebSocket, positions: Object.fromEntries(chats.map((c) => [c.id, c.last_seq])) });
bot.on('friend_request', acceptAll);
bot.on('state', ({ state }) => console.log('echo-bot:', state));
bot.on('message', (m) => {
  if (m.sender_id !== user.id) bot.send(m.chat_id, `echo: ${m.body}`);
});
bot.connect();
