// The people list in the header, pure (no DOM): one entry per person, not
// per connection.
//
// What always holds here:
//  - Connections with the same person id (hello.person: one browser, two
//    tabs) are one person; connections without one are each a person.
//  - Our own person's other tabs are not somebody else: they are counted
//    in `myTabs`, never listed.
//  - A person with several tabs is shown with the name and colour of the
//    tab that spoke last (the highest presence stamp).

/**
 * peers: [{session, name, color, person?, stamp?}] (the others' presence);
 * myPerson: this page's person id. Returns {others: [{key, person, name,
 * color, sessions: [session…]}] in the order first seen, myTabs: how many
 * of the peers are this person's other tabs}.
 */
export function peopleHere(peers, myPerson) {
  const byKey = new Map();
  let myTabs = 0;
  for (const p of peers) {
    if (myPerson && p.person === myPerson) {
      myTabs++;
      continue;
    }
    const key = p.person ? `person:${p.person}` : `session:${p.session}`;
    const seen = byKey.get(key);
    if (!seen) {
      byKey.set(key, { key, person: p.person || null, name: p.name, color: p.color, sessions: [p.session],
        stamp: p.stamp ?? 0 });
      continue;
    }
    seen.sessions.push(p.session);
    if ((p.stamp ?? 0) > seen.stamp) Object.assign(seen, { name: p.name, color: p.color, stamp: p.stamp });
  }
  const others = [...byKey.values()].map(({ stamp: _s, ...rest }) => rest);
  return { others, myTabs };
}
