"""Sends errorflow's end-to-end scenarios with the official Python SDK.

Run with: SENTRY_DSN=http://KEY@127.0.0.1:8000/1 python3 python_client.py
(`.ci/run` installs the pinned sentry-sdk.) Each scenario's event is
recognisable by its message or exception value; the Rust test asserts them
through the collector's REST API.
"""

import logging
import os

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

sentry_sdk.init(
    dsn=os.environ["SENTRY_DSN"],
    release="py-shop@1.2.3",
    environment="e2e",
    server_name="py-host",
    integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
    # Everything in one process: no background sampling or sessions to wait for.
    auto_session_tracking=False,
    traces_sample_rate=None,
)
sentry_sdk.set_tag("service", "py-shop")
sentry_sdk.set_user({"id": "u-42", "email": "ada@example.com"})

log = logging.getLogger("shop.checkout")


class PaymentError(Exception):
    pass


def charge(order_id):
    raise KeyError(f"order {order_id}")


def checkout(order_id):
    try:
        charge(order_id)
    except KeyError as e:
        raise PaymentError(f"payment for order {order_id} failed") from e


def divide(a, b):
    return a / b


# 1. A plain exception.
try:
    divide(1, 0)
except ZeroDivisionError:
    sentry_sdk.capture_exception()

# 2. A chained exception: `raise PaymentError from KeyError`, twice with
#    different order ids (one incident).
for order in (17, 18):
    try:
        checkout(order)
    except PaymentError:
        sentry_sdk.capture_exception()

# 3. logging.error without exc_info: a message event with its template.
log.error("inventory for sku %s is negative", "A-100")

# 4. logging.error with exc_info: an exception event from the logger.
try:
    {}["missing"]
except KeyError:
    log.error("lookup failed for %s", "missing", exc_info=True)

# 5. capture_message.
sentry_sdk.capture_message("nightly export finished with warnings", level="warning")

sentry_sdk.flush(timeout=10)
