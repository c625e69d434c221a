/**
 * Entries of a chat's log act on an earlier message: `edit`, `delete`, `react` and `unreact`
 * come as `message` events like messages (with `kind` and `target`), in seq order.
 */

/** True for a message that is shown as one (not an entry acting on another). */
export function isMessage(m) {
  return (m.kind ?? 'message') === 'message';
}

/**
 * Applies `entry` to `target`, the message at `entry.target` as the client holds it, and
 * returns the new state (a new object; `target` is left as it was). `me` is the reader's user
 * id, for the `me` of reactions.
 * @param {object} target
 * @param {object} entry
 * @param {number} [me]
 */
export function applyEntry(target, entry, me) {
  const next = { ...target, reactions: (target.reactions ?? []).map((r) => ({ ...r })) };
  const mine = entry.sender_id === me;
  switch (entry.kind) {
    case 'edit':
      next.body = entry.body;
      next.edited_at = entry.created_at;
      break;
    case 'delete':
      next.body = '';
      next.deleted = true;
      next.reactions = [];
      break;
    case 'react': {
      const r = next.reactions.find((x) => x.emoji === entry.body);
      if (r) {
        r.count += 1;
        r.me = r.me || mine;
      } else {
        next.reactions.push({ emoji: entry.body, count: 1, me: mine });
      }
      break;
    }
    case 'unreact': {
      const r = next.reactions.find((x) => x.emoji === entry.body);
      if (r) {
        r.count -= 1;
        if (mine) r.me = false;
        if (r.count <= 0) next.reactions = next.reactions.filter((x) => x !== r);
      }
      break;
    }
    default:
      return target;
  }
  return next;
}
