"""A `MetricSet`: declared once on the class, made per service registry with its prefix."""

from __future__ import annotations

from prometheus_client import generate_latest

from driftloop_common.runtime.metrics import LoopMetrics, MetricSet, counter, gauge, histogram


class ShopMetrics(MetricSet):
    sold = counter("sold_total", "Items sold, by kind.", "kind")
    open = gauge("open_orders", "Orders not yet shipped.")
    wait = histogram("wait_seconds", "Time an order waits.", buckets=(1, 10))


def exposition(metrics: LoopMetrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_each_service_gets_its_own_metrics_under_its_own_prefix() -> None:
    a, b = LoopMetrics("shop-a"), LoopMetrics("shop-b")
    shop_a, shop_b = ShopMetrics(a), ShopMetrics(b)
    shop_a.sold.labels("tea").inc(3)
    shop_a.open.set(2)
    shop_a.wait.observe(5)

    text_a, text_b = exposition(a), exposition(b)
    assert 'driftloop_shop_a_sold_total{kind="tea"} 3.0' in text_a
    assert "driftloop_shop_a_open_orders 2.0" in text_a
    assert 'driftloop_shop_a_wait_seconds_bucket{le="10.0"} 1.0' in text_a
    assert "driftloop_shop_b_sold_total" not in text_a
    assert 'kind="tea"' not in text_b  # b's counter is its own
    assert shop_a.sold is not shop_b.sold


def test_the_loop_metrics_are_declared_the_same_way() -> None:
    loop = LoopMetrics("shop")
    loop.received.labels("orders").inc()
    assert 'driftloop_shop_messages_received_total{topic="orders"} 1.0' in exposition(loop)


def test_catch_up_brings_a_counter_to_a_running_total_without_counting_twice() -> None:
    loop = LoopMetrics("shop")
    shop = ShopMetrics(loop)
    child = shop.sold.labels("tea")
    for total in (2, 2, 5, 4):  # a running total seen again, grown, then a stale smaller one
        shop.catch_up(child, total)
    assert 'driftloop_shop_sold_total{kind="tea"} 5.0' in exposition(loop)
