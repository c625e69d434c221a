/**
 * XFChat's client library: `Api` for the HTTP API, `Client` for the socket.
 * In Node, pass `WebSocket` from the `ws` package; for MessagePack, `msgpackCodec` from
 * `./msgpack.js`.
 */
export { Api, ApiError } from './api.js';
export { Client, CLOSE, SendError } from './client.js';
export { jsonCodec, uuid } from './codec.js';
export { applyEntry, isMessage } from './entries.js';
export { Emitter } from './emitter.js';
