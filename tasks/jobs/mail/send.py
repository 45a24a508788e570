"""Handler of email.send: one SMTP transaction per attempt."""

import smtplib
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, NoReturn

from tasks.core.errors import PermanentError, TransientError
from tasks.jobs.mail.schema import EmailPayload
from tasks.runtime.effects import JobContext


def build_message(payload: EmailPayload, sender: str, job_id: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(payload.to)
    message["Subject"] = payload.subject
    # A stable Message-ID per job lets receivers drop a duplicate delivery.
    message["Message-ID"] = make_msgid(idstring=job_id, domain="taskplane")
    message["X-Taskplane-Job"] = job_id
    message.set_content(payload.text)
    if payload.html is not None:
        message.add_alternative(payload.html, subtype="html")
    return message


def send(payload: EmailPayload, context: JobContext) -> dict[str, Any]:
    """One SMTP transaction; a job whose mail was accepted does not send it again."""
    sender = payload.from_ or context.settings.taskplane_mail_from
    message = build_message(payload, sender, context.job_id)
    return context.once("sent", lambda: _deliver(message, payload, context.settings))


def _deliver(message: EmailMessage, payload: EmailPayload, settings: Any) -> dict[str, Any]:
    try:
        with smtplib.SMTP(
            settings.taskplane_smtp_host, int(settings.taskplane_smtp_port), timeout=30
        ) as smtp:
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        raise_for_codes(
            f"all recipients refused: {exc.recipients}",
            [code for code, _ in exc.recipients.values()],
        )
    except smtplib.SMTPResponseException as exc:
        raise_for_codes(
            f"SMTP server answered {exc.smtp_code}: {exc.smtp_error!r}", [exc.smtp_code]
        )
    except OSError as exc:  # SMTPServerDisconnected, timeouts, refused connections
        raise TransientError(f"SMTP connection failed: {exc}") from exc
    return {
        "message_id": message["Message-ID"],
        "accepted": len(payload.to) - len(refused),
        "refused": sorted(refused),
    }


def raise_for_codes(message: str, codes: list[int]) -> NoReturn:
    """4xx replies are transient (RFC 5321 4.2.1); a 5xx is permanent."""
    if any(400 <= code < 500 for code in codes):
        raise TransientError(message)
    raise PermanentError(message)
