"""Outgoing mail behind one interface.

`Mailer.send` is called inside the unit of work that decided to send (the token it carries
is written in the same transaction). The default, `OutboxMailbox`, records each message as
a `mail.sent` outbox event and, only once that transaction has committed, writes it as an
.eml file into the local mailbox folder; a rolled-back call sends nothing.

The outbox event carries the envelope (recipient, subject, template), never the body: the
body holds a live one-time token, and outbox events are readable by other services. A
production mailer (SMTP or a provider) implements the same interface.
"""

from __future__ import annotations

import datetime
import email.message
import email.utils
import logging
import os
import pathlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.repository import IdentityRepository

MAIL_SENT_EVENT = "mail.sent"
SENDER = "Pixelshop <no-reply@pixelshop.invalid>"

log = logging.getLogger("pixelshop.identity.mail")


@dataclass(frozen=True)
class MailMessage:
    to: str
    subject: str
    body: str
    # What kind of mail this is, e.g. "email_verification"; for consumers and logs.
    template: str
    user_id: uuid.UUID | None = None
    message_id: uuid.UUID = field(default_factory=uuid.uuid4)


class Mailer(Protocol):
    async def send(
        self, session: AsyncSession, message: MailMessage, now: datetime.datetime
    ) -> None: ...


class OutboxMailbox:
    def __init__(self, mailbox_dir: pathlib.Path | str) -> None:
        self.mailbox_dir = pathlib.Path(mailbox_dir)

    async def send(
        self, session: AsyncSession, message: MailMessage, now: datetime.datetime
    ) -> None:
        await IdentityRepository(session).append_event(
            event_type=MAIL_SENT_EVENT,
            user_id=message.user_id,
            payload={
                "message_id": str(message.message_id),
                "to": message.to,
                "subject": message.subject,
                "template": message.template,
            },
            now=now,
        )

        def deliver(_: Any) -> None:
            # After the commit: failing here would fail a call whose effects are kept
            # (and a retried sign-up would meet ALREADY_EXISTS). The outbox has the record.
            try:
                self._write(message, now)
            except OSError as error:
                log.warning(
                    "mail not written to the mailbox folder",
                    extra={
                        "message_id": str(message.message_id),
                        "template": message.template,
                        "error": type(error).__name__,
                    },
                )

        event.listen(session.sync_session, "after_commit", deliver, once=True)

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
        name = f"{now:%Y%m%dT%H%M%S%f}-{message.message_id}.eml"
        # Write then rename, so a reader never sees half a message.
        partial = self.mailbox_dir / f".{name}.partial"
        partial.write_bytes(bytes(mail))
        os.replace(partial, self.mailbox_dir / name)
