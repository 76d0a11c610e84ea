// Shared by the core's unit tests: fake server frames in, the core's frames out.

import { Session } from '../src/core.js';

export const welcome = (fields = {}) => JSON.stringify({
  type: 'welcome', session: 'me', role: 'edit', version: 0, peers: [], doc: '', ...fields,
});
export const resumeWelcome = (from, updates, fields = {}) => {
  const frame = { type: 'welcome', session: 'me', role: 'edit', version: from + updates.length, peers: [], from, updates, ...fields };
  return JSON.stringify(frame);
};
export const updates = (from, list, extra = {}) => JSON.stringify({ type: 'updates', from, updates: list, ...extra });
export const upd = (clientID, changes) => ({ clientID, changes });
export const error = (code, message = 'no') => JSON.stringify({ type: 'error', code, message });
export const presenceFrame = (session, version, ranges, user = { name: 'P', color: '#123456' }) =>
  JSON.stringify({ type: 'presence', session, user, version, ranges });

/** A session for client "A" (options merged in), opened and welcomed with `fields`; returns [session, step]. */
export function welcomed(fields = {}, options = {}) {
  const s = new Session({ clientID: 'A', random: () => 0.5, ...options });
  s.opened(0);
  const step = s.receive(welcome(fields), 0);
  return [s, step];
}

/** A local edit (ChangeSpec) on the session's state, reported at time `now`. */
export const edit = (s, spec, now = 1000) => s.changed(s.state.update({ changes: spec }).state, now);

export const sent = (step, type) => step.send.filter((f) => f.type === type);
export const events = (step, type) => step.events.filter((e) => e.type === type);
