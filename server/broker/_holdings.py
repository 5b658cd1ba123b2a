"""What this node holds in Redis, and so must renew: pure bookkeeping.

Connection leases are held once each. Interest in a thread is counted: two
subscribers on this node follow the thread once in Redis, and the node
stops following it when the last of them unfollows.
"""

from __future__ import annotations

from collections import Counter

import attrs


@attrs.define
class Holdings:
    #: (user_id, connection_id) of every connection lease held.
    connections: set[tuple[str, str]] = attrs.field(factory=set)
    #: (user_id, thread_id) -> local followers.
    follows: Counter[tuple[str, str]] = attrs.field(factory=Counter)

    def follow(self, user_id: str, thread_id: str) -> None:
        self.follows[user_id, thread_id] += 1

    def unfollow(self, user_id: str, thread_id: str) -> bool:
        """One follower fewer; True when it was the last (or there was none)."""
        key = (user_id, thread_id)
        count = self.follows.get(key, 0) - 1
        if count > 0:
            self.follows[key] = count
            return False
        self.follows.pop(key, None)
        return True

    def following(self, user_id: str, thread_id: str) -> bool:
        return self.follows.get((user_id, thread_id), 0) > 0


def chunks(items: list[tuple[str, str]], size: int) -> list[list[tuple[str, str]]]:
    """``items`` cut into lists of at most ``size`` (one script call each)."""
    return [items[i : i + size] for i in range(0, len(items), size)]
