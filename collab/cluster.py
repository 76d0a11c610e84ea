"""Cluster: the other collab processes serving the same documents (one PostgreSQL, optionally Redis).

What lives here: telling other processes what this one committed and who is
where (Redis pub/sub, one channel per document), hearing the same from them,
and checking every open document against the database. What never lives
here: ordering decisions or durability. Each room (room.py) decides what to
do with news: apply it, or read what it missed.

Rules that always hold:
  * correctness never depends on this module: the database commit is the
    fence (storage.py) and every message here is news that may be lost,
    duplicated or late (pub/sub is at most once). A room that hears of a
    version it has not seen reads the missing updates from the database;
  * messages are published only after COMMIT returned (`publish_updates` is
    called from room.py's `Room._commit_done`, once the store said the
    commit went through), by one publisher task, in commit order (what
    waits goes out in one round trip, up to PUBLISH_BATCH messages and
    PUBLISH_BATCH_BYTES); once a publish or a ping fails, what waits and
    what is said until Redis is reached again is dropped rather than sent
    late (what was already written to a Redis that stopped answering may
    still arrive late, as any news may);
  * channels are named after the database's deployment id (made once
    at random by a migration), so that only processes on the same
    database hear each other, whatever else shares the Redis server;
  * Redis is up once it has confirmed this process's first subscription
    (within CONFIRM_TIMEOUT), and down when a connection fails or does not
    answer in time; a Redis that refuses us (an ACL, a wrong password, a
    database number it does not have: `_refusal`) is asked again later and
    later (up to REFUSED_BACKOFF_MAX seconds) and logged as refusing, with
    what to do: refused subscriptions leave it down (said once), refused
    publishes leave the subscriber alone and drop what is said until the
    next try (said once a minute). No command text goes to the log
    (redis-py quotes a failed pipeline command, and with it what was
    published);
  * one subscriber connection listens to the channels of the open
    documents; a room subscribes before it loads from the database, and
    news of a commit that comes while it loads is handed to it once it is
    there (the load may have read the database before that commit): of all
    that comes meanwhile, the one that goes furthest, in one task a load,
    however much comes (the room reads what it missed from the database); news
    of a commit to a room opened before anybody made its document makes
    that room find the document in the database (its id and links) and
    read the updates from there;
  * every open document is checked against the database every
    `--check-every` seconds (a lost *last* message must not leave a room
    behind for ever), every `--poll-every` seconds while Redis is
    unreachable or not configured; every Redis (re)connection, including
    the silent re-subscription redis-py does, triggers a check of all;
  * presence: each process is the authority for its own sessions, publishes
    their cursor moves as it sends them, republishes them all every
    `--presence-republish` seconds, and forgets another process's cursors
    `--presence-expiry` seconds after their last news (a killed process's
    cursors disappear: `leave`). A republish is a roster: every session of
    that process with a cursor in that document (none, for
    `--presence-expiry` seconds after the last one was published), so a
    session missing from it has left, though its `leave` was lost while
    Redis was away. A process back on Redis republishes at once and asks the
    others for their rosters of its open documents (whichever comes back
    last hears and is heard); a process that opens a document asks for
    theirs of it, so the cursors of people elsewhere show at once. Graceful
    shutdown publishes `leave`;
  * Redis holds no state of ours: it may be empty, restarted or gone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING

import orjson

from . import protocol
from .changes import ChangeSet
from .errors import ChangeError
from .logs import Throttle
from .rebase import Update
from .storage import masked, redact

if TYPE_CHECKING:
    from .room import Rooms

log = logging.getLogger("collab.cluster")

# One channel per document: "collab:" + the database's deployment id (storage: `deployment`) + ":doc:" + its
# name. Redis channels are server-wide (a Redis URL's database number does not separate them): named after
# the deployment, two deployments sharing one Redis server never hear each other.
PREFIX = "collab:"
QUEUE_LIMIT = 10000     # messages waiting for the publisher; beyond it they are dropped (news, not data)
QUEUE_BYTES = 16 << 20  # and bytes of them (an `updates` frame may be a whole --max-frame)
PUBLISH_BATCH = 512     # messages the publisher sends in one round trip at most (a pipeline, in queue order)
PUBLISH_BATCH_BYTES = 256 << 10  # and bytes: one more message is taken only while the batch is under this
                                 # (a batch is written within the publisher's 2 s socket timeout: ~1 Mbit/s)
STOP_TIMEOUT = 5.0      # seconds stop() waits for its cancelled tasks to end
REFUSED_BACKOFF_MAX = 10.0  # seconds between tries at most while Redis refuses us (sooner changes nothing)
CONFIRM_TIMEOUT = 5.0   # seconds a new subscriber connection may wait for Redis to confirm its subscriptions
EXPIRY_GRAIN = 0.25     # seconds: another process's cursors due to expire are dropped at most this late
WARN_EVERY = 60.0       # seconds: at most one warning a minute of each kind (news dropped, publishes refused,
                        # database checks failing), the rest counted into the next one


def _refusal(exc: BaseException | None) -> str | None:
    """What to do about `exc` if it is Redis refusing us: an ACL without PUBLISH or SUBSCRIBE or the channels
    collab:*, a wrong user or password, a database number it does not have. Unlike a Redis that does not
    answer, asking again at once changes nothing. None for anything else, passing errors included (BUSY
    while a script runs, TRYAGAIN, ...): those count as Redis not answering."""
    from redis.exceptions import AuthenticationError, AuthorizationError, NoPermissionError, ResponseError
    if isinstance(exc, NoPermissionError):
        return ("give collab's Redis user PUBLISH, SUBSCRIBE, UNSUBSCRIBE and PING on the channels collab:* "
                "(docs/deploy.md)")
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return "check the user and password in the Redis URL"
    if isinstance(exc, ResponseError) and str(exc).startswith("DB index"):
        return "use a database number the Redis server has (the URL's path: /0)"
    return None


def _news_end(msg: dict) -> int:
    """The version after the updates of a message of news (-1 if it does not say: it goes no further)."""
    frame = msg.get("m")
    if type(frame) is dict and type(frame.get("from")) is int and type(frame.get("updates")) is list:
        return frame["from"] + len(frame["updates"])
    return -1


def _name_or_none(value) -> str | None:
    """A document name from a message (a rename's new name), or None if it is not one."""
    return value if type(value) is str and protocol.valid_doc_name(value) else None


class Cluster:
    """This process's view of the others. `url` None: no Redis, the database is polled."""

    def __init__(self, rooms: "Rooms", url: str | None, check_every: float = 1.0, poll_every: float = 0.3,
                 republish: float = 10.0, expiry: float = 30.0):
        self.rooms = rooms
        self.url = url or None
        self.id = secrets.token_hex(6)  # this process, in every message it sends
        self.prefix = PREFIX + ":doc:"  # of our channels: with the deployment's id once start() read it
        self.check_every = check_every
        self.poll_every = poll_every
        self.republish = republish
        self.expiry = expiry
        self.up: bool | None = None  # Redis reachable; None until the first try says (falsy: not up)
        self._publisher_client = None
        self._publisher_made = 0  # `_returns` when that client was made
        self._returns = 0  # how many times Redis came up (the subscriber's connection confirmed)
        self._pubsub = None
        self._channels: set[str] = set()     # what we want to hear
        self._confirmed: set[str] = set()    # subscriptions Redis confirmed on the current connection
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self._queued_bytes = 0
        # A publish (or the check loop's ping) failed, and Redis has not been reached again since: news
        # is dropped as it is made, not queued to go out stale behind what is said once Redis is back.
        self._publisher_down = False
        self._sending = False  # the publisher is sending a batch it took from the queue
        self._refused: str | None = None  # the subscriber is down because Redis refused it (`_refusal`'s advice)
        self._publish_refused = Throttle(log, WARN_EVERY)  # Redis refuses our PUBLISH while it lets us listen
        self._dropping = Throttle(log, WARN_EVERY)  # while messages are dropped: not one warning each
        self._check_failing = Throttle(log, WARN_EVERY)  # and while the database checks fail
        self._tasks: list[asyncio.Task] = []
        self._check_now = asyncio.Event()
        self._republish_now = asyncio.Event()
        self._ask_rosters = False  # the next republish also asks the others for theirs (we were away)
        # Documents, and when one of our cursors there was last published (live or republished): each gets
        # a roster at every republish until `expiry` s after that (one entry per such document).
        self._rostered: dict[str, float] = {}
        # Documents loading here, and the news of updates that came meanwhile and went furthest (one entry
        # per load under way: `_when_loaded` hands it to the room once it is there).
        self._after_load: dict[str, list] = {}
        self._finding: set = set()  # rooms of no document reading whether one was made (news of it came)
        self._stopping = False
        metrics = rooms.metrics
        self.m_up = metrics.bus_up
        self.m_received, self.m_published, self.m_dropped = metrics.bus_received, metrics.bus_published, metrics.bus_dropped

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.prefix = f"{PREFIX}{await self.rooms.store.deployment()}:doc:"
        await self._compare_with_the_last_start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._check_loop()))
        self._tasks.append(loop.create_task(self._presence_loop()))
        if self.url:
            self._tasks.append(loop.create_task(self._read_loop()))
            self._tasks.append(loop.create_task(self._publish_loop()))

    async def _compare_with_the_last_start(self) -> None:
        """Say so when this process runs otherwise than the process on this database that started before it,
        in what every process must share: the secret that signs links (else links made at one are refused at
        the other, `forbidden`, and nothing else would tell the operator why), and Redis (else news between
        them waits for the database checks)."""
        access = self.rooms.access
        mine = {"secret": access.fingerprint(), "redis": bool(self.url)}
        before = await self.rooms.store.swap_last_start(mine, time.time())
        if before is None:
            return
        theirs, at = before
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
        if theirs.get("secret") != mine["secret"]:
            log.warning("cluster: this process signs links with another secret than the one the process that "
                        "started before it on this database used (at %s)%s: links made at one are refused at the "
                        "other. Give every process the same --secret-file; if the secret was changed on purpose, "
                        "restart the others with it.", when,
                        "; access control is off here" if not access.enabled else
                        "; access control is off there" if theirs.get("secret") == "none" else "")
        if theirs.get("redis", mine["redis"]) != mine["redis"]:
            log.warning("cluster: this process %s, but the process that started before it on this database (at %s) "
                        "%s: news between them waits for the database checks (every --check-every s). Give every "
                        "process the same --redis.", "uses Redis" if mine["redis"] else "runs without --redis", when,
                        "ran without --redis" if mine["redis"] else "used Redis")

    async def stop(self) -> None:
        """Say goodbye for our sessions (their cursors leave everywhere now), then close."""
        self._stopping = True
        if self.url and self.up:
            for room in list(self.rooms.rooms.values()):
                sessions = list(room.members)
                if sessions:
                    self._send(room.name, {"k": "l", "s": sessions})
            try:
                async with asyncio.timeout(2.0):
                    await self._drain()
            except TimeoutError:
                pass
        # The other loops also end at their next turn now that _stopping is set: a cancel swallowed inside a
        # library call (seen once: a loop went on after this cancel, and a test runner's final cancel of
        # what was left then waited for ever) cannot keep it going.
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, running = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT)
            if running:  # a bug, but a process asked to stop does not hang on it
                log.error("cluster: %d of its tasks did not end when cancelled", len(running))
        await _close_quietly(self._pubsub, self._publisher_client)

    async def _drain(self) -> None:
        while not self._queue.empty() or self._sending:
            await asyncio.sleep(0.01)

    # ------------------------------------------------------------- rooms call

    @property
    def _hello(self) -> str:
        """The channel every subscriber connection subscribes to first and keeps (named after the deployment,
        as every channel: known once `start` read it)."""
        return self.prefix + "\0hello"

    def channel(self, name: str) -> str:
        """The Redis channel of the document `name` in this deployment."""
        return self.prefix + name

    async def watch(self, name: str) -> None:
        """Hear about `name` (called before the room loads, so nothing committed after the load is missed)."""
        ch = self.channel(name)
        self._channels.add(ch)
        if self._pubsub is not None:  # (set only while up)
            try:
                await self._pubsub.subscribe(ch)
            except Exception as exc:  # noqa: BLE001 - the reader notices and reconnects
                log.info("subscribing to %s failed: %s", name, exc)

    def check_soon(self) -> None:
        """Check every open document against the database now, not at the next `--check-every` (a room
        found out that news did not reach it)."""
        self._check_now.set()

    def opened(self, name: str) -> None:
        """A room of `name` was just registered here (watched before its load): ask the other processes for
        their rosters there, so the cursors of their people show at once, not at their next republish (up
        to `--presence-republish` seconds later for someone who does not move). After the registration:
        an answer that came before it would find no room and be dropped."""
        if self.url and self.up:
            self._ask_rosters_of(name)

    def _ask_rosters_of(self, name: str) -> None:
        """Ask the other processes for their rosters of `name` (they answer with `_republish`)."""
        self._send(name, {"k": "q"})

    def unwatch(self, name: str) -> None:
        ch = self.channel(name)
        self._channels.discard(ch)
        self._confirmed.discard(ch)
        if self._pubsub is not None:
            self.rooms.spawn(self._unsubscribe(ch))

    async def _unsubscribe(self, ch: str) -> None:
        try:
            if ch not in self._channels:
                await self._pubsub.unsubscribe(ch)
        except Exception:  # noqa: BLE001 - a stale subscription only brings messages we ignore
            pass

    def publish_updates(self, name: str, doc_id: int, frame: bytes) -> None:
        """The `updates` frame of a commit, as sent to our own members (already COMMITted). Not while
        Redis is down: it would only wait to be dropped, and the database checks bring it anyway."""
        if self.url and self.up:
            self._queue_raw(name, b'{"k":"u","p":"%s","d":%d,"m":%s}' % (self.id.encode(), doc_id, frame))
        elif self.url:
            self.m_dropped.inc()

    def publish_presence(self, name: str, peers: list[dict]) -> None:
        if self.url and peers:
            self._send(name, {"k": "p", "peers": peers})
            self._rostered[name] = time.monotonic()  # its rosters say when the last of them has left

    def publish_leave(self, name: str, sessions: list[str]) -> None:
        if self.url and sessions:
            self._send(name, {"k": "l", "s": sessions})

    def publish_takeover(self, name: str, client_id: str, proof: dict) -> None:
        """A connection here took `client_id`: the one at another process closes (4001) if the proof holds."""
        if self.url:
            self._send(name, {"k": "t", "c": client_id, **proof})

    def publish_revoke(self, name: str, doc_id: int, deleted: bool, renamed_to: str | None = None) -> None:
        """Links reset (or the document deleted, or renamed `renamed_to`) here: sessions elsewhere end too
        (1008, saying why)."""
        if self.url:
            self._send(name, {"k": "r", "d": doc_id, "deleted": deleted} | ({"to": renamed_to} if renamed_to else {}))

    def publish_checkpoint(self, name: str, doc_id: int, version: int) -> None:
        """A version of the document was named, renamed or unnamed here (committed): rooms elsewhere say so."""
        if self.url:
            self._send(name, {"k": "c", "d": doc_id, "v": version})

    def _send(self, name: str, message: dict) -> None:
        message["p"] = self.id
        self._queue_raw(name, orjson.dumps(message))

    def _queue_raw(self, name: str, payload: bytes) -> None:
        if self._publisher_down:
            self.m_dropped.inc()
            return  # made good once Redis is back: the others check every document, we republish our cursors
        if self._queued_bytes + len(payload) > QUEUE_BYTES or self._queue.full():
            self.m_dropped.inc()
            self._dropping.warning("cluster: %d messages (%d bytes) wait for Redis; dropping more (the "
                                   "database checks catch up)", self._queue.qsize(), self._queued_bytes)
            return
        self._queue.put_nowait((self.channel(name), payload))
        self._queued_bytes += len(payload)

    # --------------------------------------------------------------- Redis

    def _client(self, **options):
        import redis.asyncio as redis
        return redis.Redis.from_url(self.url, socket_connect_timeout=2.0, **options)

    def _set_up(self, up: bool, why: BaseException | None = None) -> None:
        """Redis is heard (`up`: our subscriptions confirmed) or not, `why` the error that says so: logged
        when it changes, and when Redis that did not answer now refuses us, or the other way round."""
        refused = None if up else _refusal(why)
        if up and self.up is None:
            log.info("cluster: Redis at %s is reachable", masked(self.url))
        elif up != self.up or (not up and refused != self._refused):
            log.warning("cluster: Redis at %s %s", masked(self.url), "is reachable again" if up else
                        f"refuses us ({self._reason(why)}): {refused}; polling the database every "
                        f"{self.poll_every:g} s" if refused else
                        f"is unreachable ({self._reason(why)}); polling the database every {self.poll_every:g} s")
        self._refused = refused
        changed = up != self.up
        self.up = up
        if up:
            self._publisher_down = False
            self._returns += changed
        self.m_up.set(1 if up else 0)
        if up and changed:
            self._rosters_lost()
        if up or changed:
            # Up: whatever was said while we were away, read it. Down: start polling now, not at the
            # end of the slower check interval the loop is waiting out (news may be lost from here on).
            self._check_now.set()

    def _reason(self, exc: BaseException | None) -> str:
        """What `exc` says, for the log: its type and message, any password in it replaced by ***."""
        if exc is None:
            return "no answer"
        text = str(exc) or ("no answer in time" if isinstance(exc, TimeoutError) else "no message")
        return f"{type(exc).__name__}: {redact(text, self.url or '')}"

    async def _publish_loop(self) -> None:
        """The one publisher: messages go out in the order they were queued (commit order), all those
        waiting (PUBLISH_BATCH, PUBLISH_BATCH_BYTES at most) in one round trip: a pipeline, no MULTI.
        A backlog (a busy moment, Redis slow to answer) goes out at once, not a round trip per message."""
        backoff = refused = 0.1  # the pauses after a failure: Redis not answering, Redis refusing
        while True:  # not on _stopping: stop() drains the queue through it first
            batch = [await self._queue.get()]
            size = len(batch[0][1])
            while len(batch) < PUBLISH_BATCH and size < PUBLISH_BATCH_BYTES and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][1])
            self._queued_bytes -= size
            self._sending, client, pause = True, None, 0.0
            try:
                client = self._publisher()
                if len(batch) == 1:
                    await client.publish(*batch[0])
                else:
                    pipe = client.pipeline(transaction=False)
                    for ch, payload in batch:
                        pipe.publish(ch, payload)
                    # Errors returned, not raised: raised, redis-py writes the command into the message,
                    # and with it the start of what was published (an edit's text) into our log.
                    errors = [r for r in await pipe.execute(raise_on_error=False) if isinstance(r, Exception)]
                    if errors:
                        raise errors[0]
                self.m_published.inc(len(batch))
                if refused > 0.1:
                    log.warning("cluster: Redis at %s takes this process's news again", masked(self.url))
                backoff = refused = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis down: at most once, these are dropped
                log.debug("cluster: publish failed: %s", exc)
                advice = _refusal(exc)
                if advice and client is self._publisher_client:
                    # Redis answers, and refuses what we publish. The subscriber is not at fault: it stays
                    # (taken down, it came back at once, and each time made a check of every document and
                    # two warnings). What we say is dropped until the next try, later each time.
                    self._publish_refused.warning(
                        "cluster: Redis at %s refuses this process's news (%s): %s. Meanwhile the other "
                        "processes read its edits from the database (every --check-every s) and do not see "
                        "its editors' cursors", masked(self.url), self._reason(exc), advice)
                    self._drop_news(len(batch))
                    pause, refused = refused, min(refused * 2, REFUSED_BACKOFF_MAX)
                else:
                    self._publisher_lost(exc, client, len(batch))
                    pause, backoff = backoff, min(backoff * 2, 0.5)
            finally:
                self._sending = False
            if pause:
                await asyncio.sleep(pause)
                if refused > 0.1 and self.up:
                    self._publisher_down = False  # try again (while the subscriber is away: once it is back)

    def _publisher(self):
        """The client that publishes (and pings); made anew after a failure, connecting when first used."""
        if self._publisher_client is None:
            self._publisher_client = self._client(socket_timeout=2.0)
            self._publisher_made = self._returns
        return self._publisher_client

    def _publisher_lost(self, exc: BaseException, client, failed: int = 0) -> None:
        """A publish (or a ping) on `client` failed: Redis is down for us until the subscriber reaches it
        again (only its reconnection says it is back: while we are down nothing else asks, the check loop
        pings only while up). What waits to be published is dropped, and so is what is said until then:
        sent when Redis is back it would be old news, ahead of the new (a cursor moved then went out
        seconds late behind a thousand stale messages); the others' checks read our commits from the
        database meanwhile and when they are back, and we republish our cursors (`_rosters_lost`).
        A client already given up (the other loop's failure closed it), or one made before the subscriber
        last reached Redis, says nothing of the Redis since: its failure only drops what it carried (and,
        while Redis is down, what waits, as above). `failed`: messages of the batch that failed (counted
        as dropped)."""
        if client is not self._publisher_client:
            if self.up:
                self.m_dropped.inc(failed)
            else:  # given up by the subscriber, which lost Redis: still, nothing waits to go out late
                self._drop_news(failed)
            return
        if self.up and self._publisher_made < self._returns:
            # Made while Redis was away, and failing now that the subscriber has reached it again: its
            # failure says nothing of the Redis that is back. A new client for the next publish.
            self.m_dropped.inc(failed)
            self._publisher_client = None
            self.rooms.spawn(_close_quietly(client))
            return
        self._set_up(False, exc)
        self._drop_news(failed)
        self._publisher_client = None
        pubsub, self._pubsub = self._pubsub, None
        # Closed aside: against a Redis that does not answer, closing may wait out its timeout, and
        # neither loop should (the check loop is to start polling the database now).
        self.rooms.spawn(_close_quietly(client, pubsub))

    def _drop_news(self, failed: int) -> None:
        """Drop what waits to be published, and what is said until Redis takes it again; `failed` more
        (a batch that failed) are counted as dropped with them."""
        self._publisher_down = True
        self.m_dropped.inc(failed + self._queue.qsize())
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queued_bytes = 0

    async def _read_loop(self) -> None:
        """The one subscriber connection: read, notice reconnects, hand news to rooms."""
        backoff = 0.1
        connected = None  # when the current connection was made
        while not self._stopping:  # as well as cancelled: see stop()
            try:
                if self._pubsub is None:
                    await self._connect()
                    connected = time.monotonic()
                pubsub = self._pubsub
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                if pubsub is not self._pubsub:
                    continue  # given up meanwhile (_publisher_lost): what it still read is not ours to hear
                if message is not None:
                    self._on_message(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - anything: start over on a fresh connection
                if not self._stopping:
                    log.debug("cluster: subscriber failed: %s", exc)
                self._set_up(False, exc)
                pubsub, self._pubsub = self._pubsub, None
                refused = _refusal(exc) is not None
                if connected is not None and not refused:
                    # A connection that served lost Redis (a restart, say), and the publisher's went the
                    # same way though nothing told it yet: kept, its first use after the return failed and
                    # threw away the subscriber that had just come back (a second outage in the log, one
                    # more check of every document). The next publish makes a new one; what was under way
                    # on the old one is dropped with what waits (`_publisher_lost`).
                    publisher, self._publisher_client = self._publisher_client, None
                    self.rooms.spawn(_close_quietly(publisher))
                await _close_quietly(pubsub)
                if connected is not None and time.monotonic() - connected > REFUSED_BACKOFF_MAX and not refused:
                    backoff = 0.1  # it had served a while: a new failure
                connected = None
                await asyncio.sleep(backoff)
                # Refused, a connection fails again as soon as it is made: later and later, not every 0.1 s.
                backoff = min(backoff * 2, REFUSED_BACKOFF_MAX if refused else 0.5)

    async def _connect(self) -> None:
        """A new subscriber connection, subscribed to the channels of the open documents; Redis is up once
        it has confirmed the first subscription, within CONFIRM_TIMEOUT (redis-py's handshake included: a
        Redis that takes the connection and never answers does not hold it). A refusal (an ACL) raises."""
        client = self._client(socket_timeout=None)
        pubsub = client.pubsub()
        self._confirmed.clear()
        hello = self._hello
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT):
                await pubsub.subscribe(hello)  # a connection with at least one subscription
                while hello not in self._confirmed:  # its answer is the first on the connection
                    message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=CONFIRM_TIMEOUT)
                    if message is not None:
                        self._on_message(message)
            subscribed: set[str] = set()
            while True:  # rooms open (watch) and close (unwatch) meanwhile, seeing no pubsub yet: until it holds
                missing, stale = self._channels - subscribed, subscribed - self._channels
                if not missing and not stale:
                    break
                for ch in missing:
                    await pubsub.subscribe(ch)
                if stale:
                    await pubsub.unsubscribe(*stale)
                subscribed = (subscribed | missing) - stale
        except BaseException:
            await _close_quietly(pubsub, client)  # its socket closed now (a refused or silent Redis: each try's)
            raise
        self._pubsub = pubsub
        self._set_up(True)

    def _on_message(self, message: dict) -> None:
        kind = message.get("type")
        ch = message.get("channel")
        ch = ch.decode() if isinstance(ch, bytes) else ch
        if kind == "unsubscribe":
            self._confirmed.discard(ch)
            return
        if kind == "subscribe":
            if ch == self._hello and ch in self._confirmed:
                # redis-py reconnected and subscribed again by itself: we missed what came meanwhile. (Told
                # by the channel subscribed once a connection and never let go of: a document's may be
                # confirmed twice, watched, unwatched and watched again before its unsubscribe went.)
                log.info("cluster: the Redis connection was renewed; checking every document")
                self._check_now.set()
                self._rosters_lost()
            if ch in self._channels or ch == self._hello:  # not one let go of before its answer came
                self._confirmed.add(ch)
            return
        if kind != "message" or not ch or not ch.startswith(self.prefix):
            return
        self.m_received.inc()
        try:
            self._handle(ch[len(self.prefix):], orjson.loads(message["data"]))
        except Exception:  # noqa: BLE001 - a message we cannot read is a lost message
            log.exception("cluster: a message on %s could not be handled", ch)

    def _handle(self, name: str, msg: dict, loaded: bool = False) -> None:
        if type(msg) is not dict or msg.get("p") == self.id:
            return  # our own echo
        room = self.rooms.rooms.get(name)
        kind = msg.get("k")
        if kind == "u" and room is None and not loaded:
            loading = self.rooms.loading(name)
            if loading is not None:
                # A commit elsewhere while the document loads here: the load may have read the database
                # before it, and the room would serve the version before it until the next check. Of what
                # comes meanwhile, the news that goes furthest waits (the room applies it, or reads what it
                # missed from the database: what the others said is in there too), in one task per load.
                held = self._after_load.get(name)
                if held is None or held[0] is not loading:
                    held = self._after_load[name] = [loading, msg, False]
                    self.rooms.spawn(self._when_loaded(name, held))
                else:
                    if msg.get("d") != held[1].get("d"):
                        held[2] = True  # news of two documents of that name: the database says, once loaded
                    if _news_end(msg) > _news_end(held[1]):
                        held[1] = msg
                return
        if kind in ("u", "r", "c") and "d" in msg and room is not None and room.doc_id is not None \
                and msg["d"] != room.doc_id:
            # Another document of that name: ours was deleted or renamed elsewhere and the news is not
            # here yet. Not ours to apply: the database says.
            self._check_now.set()
            return
        if kind == "r":
            self.rooms.spawn(self.rooms.revoked_elsewhere(name, bool(msg.get("deleted")), _name_or_none(msg.get("to"))))
        if room is None or room.broken:
            return
        if kind == "u":
            if room.doc_id is None:
                # Nobody had made the document when this room opened, and another process just did: the
                # room becomes it (its id and links, from the database), then reads its updates from there.
                # Applied as news, they would give a room with no document text it could never store.
                # One read at a time, however much news comes: news is published after its commit, so a
                # read started after any of it finds the document.
                if room not in self._finding:
                    self._finding.add(room)
                    self.rooms.spawn(self._find_document(room))
                return
            frame = msg["m"]
            start = frame["from"]
            try:
                # As a push's (protocol.py): a whole version (not JSON true, not 1.0), string clientIDs.
                if type(start) is not int or start < 0 or any(type(u["clientID"]) is not str for u in frame["updates"]):
                    raise TypeError("news of updates not of the protocol's shape")
                updates = [Update(u["clientID"], ChangeSet.from_json(u["changes"])) for u in frame["updates"]]
            except (ChangeError, KeyError, TypeError):
                room.catch_up()  # news we cannot read: what it says is in the database, if anything
                return
            room.remote(start, updates)
        elif kind == "p":
            room.remote_presence(msg["p"], msg.get("peers") or [], time.monotonic(), roster=msg.get("all") is True)
        elif kind == "l":
            room.remote_leave(msg.get("s") or [])
        elif kind == "q":  # back on Redis, it asks for what it may have missed
            self._republish(time.monotonic(), [name])
        elif kind == "t":
            room.taken_elsewhere(msg.get("c"), msg)
        elif kind == "c" and type(msg.get("v")) is int and msg["v"] >= 0:
            room.checkpoints_changed(msg["v"])

    async def _find_document(self, room) -> None:
        """`room.find_document()`, the one read of it under way (`_finding`) until it ends."""
        try:
            await room.find_document()
        finally:
            self._finding.discard(room)

    async def _when_loaded(self, name: str, held: list) -> None:
        """News of updates that came while `name` loaded (`held`: the load, the message that went
        furthest, and whether news of another document of that name came too), handed to its room once
        the load is done (the room applies what it does not have yet, or reads it: `Room.remote`); news
        of two documents asks for a check then (asked during the load, it would pass the room by). Only
        updates wait so: they are versioned, so applied late or out of turn they can only be old news;
        cursors and leaves are not (the room asks for the others' rosters once it is there: `opened`)."""
        try:
            await asyncio.shield(held[0])
        finally:
            if self._after_load.get(name) is held:
                del self._after_load[name]
        if held[2]:
            self._check_now.set()
        try:
            self._handle(name, held[1], loaded=True)
        except Exception:  # noqa: BLE001 - a message we cannot read is a lost message
            log.exception("cluster: a message on %s could not be handled", self.channel(name))

    # ------------------------------------------------------------- checks

    async def _check_loop(self) -> None:
        """Every open document against the database: fast while Redis is away, slowly when it is up."""
        while not self._stopping:  # as well as cancelled: see stop()
            interval = self.check_every if self.up else self.poll_every
            try:
                async with asyncio.timeout(interval):  # not wait_for: Python 3.11's drops a cancel that
                    await self._check_now.wait()        # comes as the event is set (stop() then hung)
            except TimeoutError:
                pass
            self._check_now.clear()
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be away too; try again
                # Said (once a minute): while it fails, news lost on Redis is not made good.
                self._check_failing.warning("cluster: checking the open documents against the database "
                                            "failed: %s: %s", type(exc).__name__, exc)
            if self.url and self.up:
                client = self._publisher()  # the one publishes use: it is their connection that is checked
                try:
                    async with asyncio.timeout(1.0):
                        await client.ping()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - paused or gone: poll until it answers again
                    from redis.exceptions import NoPermissionError
                    if not isinstance(exc, NoPermissionError):  # (refused by an ACL: an answer all the same)
                        self._publisher_lost(exc, client)

    async def check(self) -> None:
        """Read the database's head of every open document: a room behind it catches up, and one whose
        links were reset, or that was deleted or renamed, elsewhere ends its sessions as the news would
        have (the news is at most once: this is what makes it sure, with Redis or without). A room open
        on a name no document had yet becomes that document once one is made elsewhere."""
        unborn = [r for r in self.rooms.rooms.values() if not r.broken and r.doc_id is None]
        if unborn:  # made elsewhere? One query for all (one each, in turn, made a check of thousands late)
            made = await self.rooms.store.documents_named([r.name for r in unborn])
            for room in unborn:
                info = made.get(room.name)
                if info is not None:
                    room.born_elsewhere(info["id"], info["salt"], info["created"])
        rooms = [r for r in self.rooms.rooms.values() if not r.broken and r.doc_id is not None]
        if not rooms:
            return
        heads = await self.rooms.store.heads([r.doc_id for r in rooms])
        for room in rooms:
            if self.rooms.rooms.get(room.name) is not room:
                continue  # gone while we read (deleted here, say, and its name perhaps another document's now)
            head = heads.get(room.doc_id)
            if head is None or head[2] != room.name:  # deleted, or renamed (to head[2])
                self.rooms.spawn(self.rooms.revoked_elsewhere(room.name, True, None if head is None else head[2],
                                                              doc_id=room.doc_id))
                continue
            version, salt, _ = head
            if salt != room.salt:
                self.rooms.spawn(self.rooms.revoked_elsewhere(room.name, False, doc_id=room.doc_id))
            if version > room.seq.committed_version and not room.broken:
                room.catch_up()

    async def _presence_loop(self) -> None:
        """Republish our cursors every `republish` s and when Redis is back; forget other processes' after
        `expiry` s of silence: it wakes when the oldest of them is due (at most EXPIRY_GRAIN late), not at a
        fixed tick (which was up to a third of `expiry` late: 40 s instead of 30 for a killed process's)."""
        last_republish = time.monotonic()
        wake = last_republish + self.republish
        while not self._stopping:  # as well as cancelled: see stop()
            try:
                async with asyncio.timeout(max(0.0, wake - time.monotonic())):
                    await self._republish_now.wait()
            except TimeoutError:
                pass
            now = time.monotonic()
            oldest = None  # the oldest news of another process's cursor still shown here
            for room in list(self.rooms.rooms.values()):
                left = room.expire_remote(now - self.expiry)
                if left is not None and (oldest is None or left < oldest):
                    oldest = left
            if self._republish_now.is_set() or now - last_republish >= self.republish:
                self._republish_now.clear()
                last_republish = now
                if self.url and self.up:  # (while Redis is away it would only be dropped)
                    if self._ask_rosters:
                        self._ask_rosters = False
                        for name in list(self.rooms.rooms):
                            self._ask_rosters_of(name)
                    self._republish(now)
            # The next wake: the next republish, or the expiry of the oldest cursor if sooner (one whose news
            # comes meanwhile is due after that republish: expiry > republish).
            wake = last_republish + self.republish
            if oldest is not None:
                wake = min(wake, max(oldest + self.expiry, now + EXPIRY_GRAIN))

    def _rosters_lost(self) -> None:
        """Back on Redis: what was said meanwhile, leaves included, may be lost. Republish ours, ask for theirs."""
        self._ask_rosters = True
        self._republish_now.set()

    def _republish(self, now: float, names: list[str] | None = None) -> None:
        """The roster of each document (or of `names`): the cursors of all our sessions there. One with
        none goes on getting an empty roster for `expiry` s after the last was published (the others forget
        them by then anyway), the room unloaded or not."""
        for name in [name for name, last in self._rostered.items() if now - last >= self.expiry]:
            del self._rostered[name]
        if names is None:
            names = list(self._rostered) + [name for name in self.rooms.rooms if name not in self._rostered]
        rosters = {}
        for name in names:
            room = self.rooms.rooms.get(name)
            peers = room.local_presence(roster=True) if room is not None else []
            if peers:
                self._rostered[name] = now
            if name in self._rostered:
                rosters[name] = peers
        for name, peers in rosters.items():
            self._send(name, {"k": "p", "peers": peers, "all": True})


async def _close_quietly(*clients) -> None:
    """Close Redis clients (or pub/subs) that may be broken already; None and any error are skipped."""
    for client in clients:
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # noqa: BLE001 - it is being dropped anyway
                pass
