"""Settling moves the message; nothing is ever deleted. :meth:`GraphMoves.settle_many` moves many in JSON batches
(20 moves a request) and returns the ones Graph refused, which stay where they are. ``retry`` moves a message back
by its immutable id."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import quote

from ...errors import IngestError
from ...graph.client import BatchRequest, failure_of
from ...model import MessageRef
from ..base import Outcome
from .folders import GraphFolders

log = logging.getLogger("ingest.mailbox.graph")


class GraphMoves(GraphFolders):
    """Moves to the processed and failed folders, and back for a retry."""

    def leave(self, ref: MessageRef) -> None:
        """Not carried to the next run: only a change of the message, or of the rules, shows it again."""
        self._left.add(ref.ref)

    def settle(self, ref: MessageRef, outcome: Outcome) -> None:
        path = self.account.processed_folder if outcome == "processed" else self.account.failed_folder
        target = self._require_folder(path, create=True)
        try:
            self.session.run(lambda: self._move(ref.ref, target))
        except Exception as err:
            failure = failure_of(err)
            if failure is not None and failure.status == 404 and self._already_in(ref.ref, target):
                self._settled.add(ref.ref)
                return  # an earlier attempt moved it and the answer got lost
            raise self._translate(err, f"moving message {ref.key} to {path!r}", message_level=True) from err
        self._settled.add(ref.ref)
        log.info("%s: message %s moved to %s", self._where, ref.key, path)

    async def _move(self, message_id: str, target: str) -> None:
        from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody

        await self._user.messages.by_message_id(message_id).move.post(MovePostRequestBody(destination_id=target))

    settles_in_batches = True

    def settle_many(self, refs: Sequence[MessageRef], outcome: Outcome) -> dict[str, IngestError]:
        """Move messages to the processed or failed folder in JSON batches (20 moves a request, throttled ones
        sent again after Retry-After). Returns, by message key, why Graph did not move a message: those stay in
        the source folder and must not be counted as settled. Raises what stops the run or the account when the
        batches themselves fail."""
        if not refs:
            return {}
        path = self.account.processed_folder if outcome == "processed" else self.account.failed_folder
        target = self._require_folder(path, create=True)
        requests = [
            BatchRequest(
                "POST", f"{self._user_path}/messages/{quote(ref.ref, safe='')}/move", {"destinationId": target}
            )
            for ref in refs
        ]
        try:
            answers = self.session.batch(requests)
        except Exception as err:
            raise self._translate(err, f"moving {len(refs)} messages to {path!r}", message_level=False) from err
        failures: dict[str, IngestError] = {}
        for ref, answer in zip(refs, answers, strict=True):
            if answer.ok:
                self._settled.add(ref.ref)
                continue
            failure = answer.failure()
            if failure.status == 404 and self._already_in(ref.ref, target):
                self._settled.add(ref.ref)
                continue  # an earlier attempt moved it and the answer got lost
            failures[ref.key] = self._refusal(failure, f"moving message {ref.key} to {path!r}")
            log.warning("%s: message %s not moved to %s: %s", self._where, ref.key, path, failures[ref.key])
        log.info("%s: %d messages moved to %s", self._where, len(refs) - len(failures), path)
        return failures

    def restore(self, key: str, identity: str | None) -> bool:
        """``retry``: move a message (by its immutable id, which survives the moves) back to the source folder,
        where the next import takes it. False when the mailbox no longer has it."""
        message_id = key
        source = self._require_folder(self.account.folder, create=False)
        try:
            self.session.run(lambda: self._move(message_id, source))
        except Exception as err:
            failure = failure_of(err)
            if failure is not None and failure.status == 404:
                return False
            raise self._translate(
                err, f"moving message {message_id} back to {self.account.folder!r}", message_level=False
            ) from err
        log.info("%s: message %s moved back to %s for a retry", self._where, message_id, self.account.folder)
        return True

    def _already_in(self, message_id: str, folder_id: str) -> bool:
        try:
            message = self.session.run(lambda: self._user.messages.by_message_id(message_id).get())
        except Exception:  # noqa: BLE001 - a message we cannot see is not where we wanted it
            return False
        return message is not None and message.parent_folder_id == folder_id
