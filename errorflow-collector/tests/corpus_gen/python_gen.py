"""Generates the Python part of the labelled grouping corpus with the real
Python SDK (sentry-sdk, as pinned by .ci/run).

Regenerate with (from the repository root):

    python3 -m pip install sentry-sdk==2.46.0
    python3 errorflow-collector/tests/corpus_gen/python_gen.py \
        > errorflow-collector/tests/fixtures/corpus/python.jsonl

How it works. A small shop application (`APP` below: modules `shop.orders`,
`shop.payments`, `shop.inventory`, `shop.users`, `shop.jobs`) is written into
three "deploy" directories, each with a different release and with blank
lines inserted at different places, so that line numbers and absolute paths
move between deploys as they do in production. Each deploy runs in its own
interpreter with `sentry_sdk.init(transport=CapturingTransport)`: the SDK
builds its envelopes exactly as it would for a server, and the transport
writes each event item instead of sending it. Before each call of a bug
site, the driver records the site's label; the label is the ground truth
(one label = one place in the code that goes wrong = one incident).

Two services run the same code: `py-shop` with the SDK's defaults, and
`py-worker` with `attach_stacktrace=True` (its messages carry a stack).
Occurrences vary their values (ids, amounts, e-mails, URLs, UUIDs, durations,
codes) with a fixed seed, so the output is reproducible up to the SDK's own
timestamps and ids.

Fields no grouping rule reads and that only make the file large
(`modules`, `breadcrumbs`, `extra.sys.argv`, the SDK's integration and
package lists, frames' `pre_context`/`post_context`/`vars`) are dropped
(`corpus_common.slim`).
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from corpus_common import render, slim

# The application. `{pad:N}` markers become a deploy-specific number of
# blank lines: deploys move code without changing it.
APP = {
    "shop/__init__.py": "",
    "shop/orders.py": '''
ORDERS = {"ord-1": {"items": ["A-100"], "total": 10.0, "email": "ada@example.com"}}
{pad:1}

def get_order(order_id):
    return ORDERS[order_id]
{pad:2}

def validate(order):
    if not order.get("items"):
        raise ValueError("order has no items")
{pad:3}
    if order["total"] < 0:
        raise ValueError(f"order total {order['total']:.2f} is negative")
    if "@" not in order["email"]:
        raise ValueError(f"invalid e-mail address {order['email']!r}")


def parse_quantity(raw):
    return int(raw)
{pad:4}

def parse_price(raw):
    return float(raw)
''',
    "shop/payments.py": '''
import logging

log = logging.getLogger("shop.payments")


class PaymentError(Exception):
    pass


class CardDeclined(PaymentError):
    pass
{pad:1}

def gateway_call(order_id):
    raise ConnectionError(f"connection to https://pay.example.com/v2/charges/{order_id} refused")


def checkout(order_id):
    try:
        gateway_call(order_id)
    except ConnectionError as e:
        raise PaymentError(f"payment for order {order_id} failed") from e
{pad:2}

def authorize(last4, code):
    raise CardDeclined(f"card ending {last4} declined: {code}")


def split(total, parts):
    return total / parts
{pad:3}

def refund(order_id, status):
    log.error("refund for order %s rejected by gateway: status %s", order_id, status)


def capture_payment(order_id, status):
    log.error("refund for order %s rejected by gateway: status %s", order_id, status)
''',
    "shop/inventory.py": '''
import logging

log = logging.getLogger("shop.inventory")
{pad:1}

def reserve(sku, qty):
    raise RuntimeError("upstream unavailable")


def restock(sku):
    raise RuntimeError("upstream unavailable")
{pad:2}

def check_stock(sku, level):
    log.error("inventory for sku %s is negative (%d)", sku, level)


def sync(sku):
    try:
        reserve(sku, 1)
    except RuntimeError:
        log.error("sync failed for sku %s", sku, exc_info=True)
{pad:3}

def audit(warehouse, n):
    log.error(f"stock audit found {n} discrepancies in warehouse {warehouse}")


def import_feed(path):
    with open(path) as f:
        return f.read()
''',
    "shop/users.py": '''
class User:
    def __init__(self, email=None, profile=None):
        self.email = email
        self.profile = profile
{pad:1}

def normalized_email(user):
    return user.email.lower()


def newsletter_address(user):
    return user.profile["email"]


def invoice_address(user):
    return user.profile["email"]
{pad:2}

def grant(email, project):
    raise PermissionError(f"user {email} may not access project {project}")


def fetch_avatar(url, ms):
    raise TimeoutError(f"GET {url} timed out after {ms}ms")
''',
    "shop/billing.py": '''
import logging

log = logging.getLogger("shop.billing")


class GatewayError(Exception):
    pass


def charge(customer, amount):
    raise GatewayError(f"charge of {amount:.2f} for {customer} declined by gateway")
{pad:1}

def checkout_charge(customer):
    return charge(customer, 10.0)


def renewal_charge(customer):
    return charge(customer, 20.0)
{pad:2}

def remind(invoice, account, ms):
    log.error(f"invoice {invoice} for {account} still unpaid after {ms}ms")


def session_expired(session, request):
    log.error(f"session {session} expired during request {request}")


def transition(order, a, b):
    log.error(f"order {order}: invalid transition {a} -> {b}")
''',
    "shop/jobs.py": '''
import sentry_sdk


def nightly_export(warnings):
    sentry_sdk.capture_message(f"nightly export finished with {warnings} warnings", level="warning")
{pad:1}

def cleanup(worker):
    sentry_sdk.capture_message(f"cleanup skipped: lock held by worker {worker}", level="error")


def process(job_id):
    raise LookupError(f"no job with id {job_id}")
{pad:2}

def retry_failed(job_id):
    try:
        process(job_id)
    except LookupError:
        raise RuntimeError(f"retry of job {job_id} failed")


def load_config(raw):
    import json
    return json.loads(raw)
''',
}

# The deploy's entry point: runs the scenarios named on the command line.
MAIN = '''
import json
import logging
import os
import random
import sys
import uuid

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

OUT = open(os.environ["CORPUS_OUT"], "a")
logging.basicConfig(handlers=[logging.NullHandler()])
LABEL = [None]


class CapturingTransport(Transport):
    """Writes each event item with the current label instead of sending it."""

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.headers.get("type") == "event":
                OUT.write(json.dumps({"label": LABEL[0], "event": item.payload.json}) + "\\n")
                OUT.flush()


service = os.environ["CORPUS_SERVICE"]
sentry_sdk.init(
    dsn="http://00000000000000000000000000000000@127.0.0.1:1/1",
    transport=CapturingTransport,
    release=f"{service}@{os.environ['CORPUS_RELEASE']}",
    environment="production",
    server_name=f"{service}-1",
    attach_stacktrace=os.environ.get("CORPUS_ATTACH") == "1",
    include_local_variables=False,
    max_breadcrumbs=0,
    integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
    auto_session_tracking=False,
    traces_sample_rate=None,
)
sentry_sdk.set_tag("service", service)

from shop import billing, inventory, jobs, orders, payments, users  # noqa: E402

rng = random.Random(int(os.environ["CORPUS_SEED"]))


def run(label, fn):
    LABEL[0] = f"{service}/{label}"
    try:
        fn()
    except Exception:
        sentry_sdk.capture_exception()


def word(choices):
    return rng.choice(choices)


def token(n):
    # Like a payment provider's ids: letters and digits, at least one digit.
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789"
    return "".join(rng.choice(alphabet) for _ in range(n - 1)) + str(rng.randint(0, 9))


SKUS = ["A-100", "B-17", "shoes-42", "hat", "kb-9000", "T-SHIRT-L"]
SCENARIOS = {
    "orders.get_order": lambda: orders.get_order(f"ord-{rng.randint(2, 99999)}"),
    "orders.validate.no_items": lambda: orders.validate({"items": [], "total": 1, "email": "a@b.c"}),
    "orders.validate.negative": lambda: orders.validate(
        {"items": ["x"], "total": -rng.uniform(1, 500), "email": "a@b.c"}),
    "orders.validate.email": lambda: orders.validate(
        {"items": ["x"], "total": 3, "email": word(["bob", "alice.example.com", "n/a", "ada at home"])}),
    "orders.parse_quantity": lambda: orders.parse_quantity(word(["many", "ten", "1,5", "", "x2"])),
    "orders.parse_price": lambda: orders.parse_price(word(["free", "12,50", "$3", "N/A"])),
    "payments.checkout": lambda: payments.checkout(rng.randint(1000, 99999)),
    "payments.authorize": lambda: payments.authorize(
        rng.randint(1000, 9999), word(["insufficient_funds", "do_not_honor", "expired_card"])),
    "payments.split": lambda: payments.split(rng.randint(1, 900), 0),
    "payments.refund": lambda: payments.refund(rng.randint(1, 99999), word([402, 409, 500, 503])),
    "payments.capture_payment": lambda: payments.capture_payment(rng.randint(1, 99999), word([402, 500])),
    "inventory.reserve": lambda: inventory.reserve(word(SKUS), rng.randint(1, 5)),
    "inventory.restock": lambda: inventory.restock(word(SKUS)),
    "inventory.check_stock": lambda: inventory.check_stock(word(SKUS), -rng.randint(1, 50)),
    "inventory.sync": lambda: inventory.sync(word(SKUS)),
    "inventory.audit": lambda: inventory.audit(word(["berlin-2", "lyon", "WH7"]), rng.randint(2, 400)),
    "inventory.import_feed": lambda: inventory.import_feed(f"/var/feeds/{uuid.UUID(int=rng.getrandbits(128))}.csv"),
    "users.normalized_email": lambda: users.normalized_email(users.User()),
    "users.newsletter_address": lambda: users.newsletter_address(users.User(email="x@y.z")),
    "users.invoice_address": lambda: users.invoice_address(users.User(email="x@y.z")),
    "users.grant": lambda: users.grant(
        f"{word(['ada', 'bob', 'li.wei'])}{rng.randint(1, 99)}@example.com", uuid.UUID(int=rng.getrandbits(128))),
    "users.fetch_avatar": lambda: users.fetch_avatar(
        f"https://cdn.example.com/avatars/{rng.randint(1, 10**6)}.png?s={rng.randint(16, 256)}", rng.randint(1000, 30000)),
    "jobs.nightly_export": lambda: jobs.nightly_export(rng.randint(1, 300)),
    "jobs.cleanup": lambda: jobs.cleanup(rng.randint(1, 16)),
    "jobs.retry_failed": lambda: jobs.retry_failed(rng.randint(1, 10**6)),
    "jobs.load_config": lambda: jobs.load_config(word(['{"a": 1,', "{'a': 1}", "", "[1, 2"])),
    # One raise site reached through two callers: one incident.
    "billing.charge": lambda: word([billing.checkout_charge, billing.renewal_charge])(f"cus_{token(14)}"),
    # f-strings with prefixed identifiers and durations glued to their unit.
    "billing.remind": lambda: billing.remind(
        f"inv_{rng.getrandbits(48):012x}", f"acct_{token(16)}", rng.randint(1000, 99999)),
    "billing.session_expired": lambda: billing.session_expired(
        f"sess:{rng.getrandbits(32):08x}", f"req-{rng.getrandbits(24):06x}"),
    # Enum words that vary in a message with a stack (the worker only).
    "billing.transition": lambda: billing.transition(
        rng.randint(1, 99999), word(["Paid", "Cancelled", "Pending"]), word(["Shipped", "Paid", "Refunded"])),
}

for name in sys.argv[1:]:
    site, count = name.split("=")
    for _ in range(int(count)):
        run(site, SCENARIOS[site])

sentry_sdk.flush(timeout=10)
'''

# (service, attach_stacktrace, sites). The worker runs the sites whose
# events are messages, plus a few exceptions, with stacks attached.
SERVICES = [
    ("py-shop", False, None),
    ("py-worker", True, [
        "inventory.check_stock", "inventory.audit", "inventory.sync", "payments.refund",
        "payments.capture_payment", "jobs.nightly_export", "jobs.cleanup", "orders.get_order",
        "users.grant", "billing.transition", "billing.remind",
    ]),
]
# Sites whose varying words only a stack can group: not run without one.
STACK_ONLY = {"billing.transition"}
DEPLOYS = [("1.4.0", 0), ("1.4.1", 3), ("1.5.0", 7)]


def main():
    import random

    rng = random.Random(6)
    all_sites = None
    with tempfile.TemporaryDirectory(prefix="errorflow-corpus-") as root:
        out_path = os.path.join(root, "events.jsonl")
        for service, attach, sites in SERVICES:
            for d, (release, shift) in enumerate(DEPLOYS):
                deploy = os.path.join(root, f"releases/{service}-{release}")
                for path, source in APP.items():
                    full = os.path.join(deploy, path)
                    os.makedirs(os.path.dirname(full), exist_ok=True)
                    with open(full, "w") as f:
                        f.write(render(textwrap.dedent(source), shift))
                with open(os.path.join(deploy, "main.py"), "w") as f:
                    f.write(MAIN)
                if all_sites is None:
                    all_sites = [line.split('"')[1] for line in MAIN.splitlines()
                                 if line.startswith('    "') and '": lambda' in line]
                names = sites or [s for s in all_sites if s not in STACK_ONLY]
                # Each site fires 1-4 times per deploy: group sizes differ.
                args = [f"{s}={rng.randint(1, 4)}" for s in names]
                env = dict(os.environ, CORPUS_OUT=out_path, CORPUS_SERVICE=service,
                           CORPUS_RELEASE=release, CORPUS_ATTACH="1" if attach else "0",
                           CORPUS_SEED=str(rng.randint(0, 10**9)))
                subprocess.run([sys.executable, "main.py", *args], cwd=deploy, env=env, check=True)
        with open(out_path) as f:
            for line in f:
                record = json.loads(line)
                record["event"] = slim(record["event"])
                sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
