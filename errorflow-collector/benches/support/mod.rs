//! What the benches share: the Sentry event they send.

/// Site `site`'s event (one of 50 raising sites of a Python service, five
/// services) as sentry-sdk sends it, without the fields that vary per
/// request (id, time, user, request, extra): about 3.7 KB with a chained
/// exception, frames with context lines, breadcrumbs and contexts.
pub fn python_event(site: usize) -> serde_json::Value {
    let frame = |function: String, lineno: u32| {
        serde_json::json!({
            "filename": "shop/billing.py", "abs_path": "/srv/shop/billing.py",
            "function": function, "module": "shop.billing", "lineno": lineno, "in_app": true,
            "pre_context": ["", "def charge(order):", "    card = order.card", "    amount = order.total()", "    try:"],
            "context_line": "        gateway.charge(card, amount)",
            "post_context": ["    except GatewayError as e:", "        raise PaymentError(order.id) from e", "", "", "def refund(order):"],
        })
    };
    serde_json::json!({
        "platform": "python",
        "level": "error",
        "logger": "shop.billing",
        "server_name": "web-1",
        "release": format!("svc-{}@1.4.2", site % 5),
        "environment": "prod",
        "exception": {"values": [
            {"type": "GatewayError", "value": "card 4242 declined after 212ms",
             "module": "shop.gateway", "mechanism": {"type": "chained", "handled": true},
             "stacktrace": {"frames": [frame("charge".into(), 40), frame("call_gateway".into(), 88)]}},
            {"type": format!("PaymentError{site}"), "value": "order could not be charged",
             "module": "shop.billing", "mechanism": {"type": "generic", "handled": true},
             "stacktrace": {"frames": [frame("checkout".into(), 12), frame(format!("charge_{site}"), 42)]}},
        ]},
        "tags": {"region": "eu-west-1", "customer_tier": "pro"},
        "breadcrumbs": {"values": [
            {"timestamp": 1_795_805_562.0, "category": "query", "message": "SELECT * FROM orders WHERE id = %s", "level": "info"},
            {"timestamp": 1_795_805_563.0, "category": "httplib", "type": "http", "data": {"url": "https://gateway/charge", "method": "POST", "status_code": 402}},
        ]},
        "contexts": {"runtime": {"name": "CPython", "version": "3.12.3"}, "os": {"name": "Linux"}},
        "sdk": {"name": "sentry.python", "version": "2.46.0"},
    })
}
