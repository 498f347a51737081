"""Outgoing mail behind one interface.

Mail is never sent inside a request or a transaction: requests write a `mail_requests`
row, and the mail worker (workflows.MailWorkflow) composes each message in one short
transaction and hands it to `Mailer.send` with none open (`send` refuses otherwise, like
every adapter to an outside system, ADR 0011). Mail is not a cross-service event: nothing
about it goes into the outbox.

The default, `MailboxFolder`, writes each message as an .eml file into the local mailbox
folder. A production mailer (SMTP or a provider) implements the same interface, using
`message.message_id` as its idempotency key: a message retried after a crash carries the
same id (the folder then replaces the earlier file).
"""

from __future__ import annotations

import asyncio
import datetime
import email.message
import email.utils
import os
import pathlib
import uuid
from dataclasses import dataclass
from typing import Protocol

from runtime.db import refuse_remote_call

SENDER = "Pixelshop <no-reply@pixelshop.invalid>"


@dataclass(frozen=True)
class MailMessage:
    to: str
    subject: str
    body: str
    # What kind of mail this is, e.g. "email_verification"; for logs and the header.
    template: str
    # The request it answers: the same on every retry of that request.
    message_id: uuid.UUID


class Mailer(Protocol):
    async def send(self, message: MailMessage, now: datetime.datetime) -> None: ...


class MailboxFolder:
    def __init__(self, mailbox_dir: pathlib.Path | str) -> None:
        self.mailbox_dir = pathlib.Path(mailbox_dir)

    async def send(self, message: MailMessage, now: datetime.datetime) -> None:
        refuse_remote_call("mail delivery")
        await asyncio.to_thread(self._write, message, now)  # a disk can be slow too

    def _write(self, message: MailMessage, now: datetime.datetime) -> None:
        mail = email.message.EmailMessage()
        mail["From"] = SENDER
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Date"] = email.utils.format_datetime(now)
        mail["Message-ID"] = f"<{message.message_id}@pixelshop.invalid>"
        mail["X-Pixelshop-Template"] = message.template
        mail.set_content(message.body)
        self.mailbox_dir.mkdir(parents=True, exist_ok=True)
        name = f"{message.message_id}.eml"
        # Write then rename, so a reader never sees half a message.
        partial = self.mailbox_dir / f".{name}.partial"
        partial.write_bytes(bytes(mail))
        os.replace(partial, self.mailbox_dir / name)
