/**
 * A minimal event emitter: `on` returns the function that removes the listener.
 */
export class Emitter {
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();

  /**
   * @param {string} event
   * @param {(payload: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.#listeners.get(event)?.delete(listener);
  }

  /**
   * @param {string} event
   * @param {any} [payload]
   */
  emit(event, payload) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(payload);
      } catch (err) {
        // A listener's bug must not break the connection that called it.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
