-- One hold, as POST /v1/holds runs it on PostgreSQL (1 adult, 1 segment), for pgbench:
--   pgbench -n -M prepared -f bench/hold.sql -D ntargets=N -c 64 -j 2 -T 20 skybook_bench
-- bench_targets (n, flight_id, code) is filled by bench/booking.py with every open booking class.
\set n random(1, :ntargets)
BEGIN;
-- Take the seat in the booking class, only if the class is open, has room and the flight is on sale.
UPDATE booking_classes AS bc SET held = bc.held + 1
  FROM flights AS f, bench_targets AS t
  WHERE t.n = :n AND bc.flight_id = t.flight_id AND bc.code = t.code
    AND bc.is_open AND bc.held + bc.sold + 1 <= bc.seat_limit
    AND f.id = bc.flight_id AND f.status = 'scheduled' AND f.departure_at > now()
  RETURNING bc.id AS bc_id, bc.cabin_id, bc.fare_amount, bc.currency, bc.flight_id, bc.code,
            f.carrier, f.flight_number, f.origin, f.destination, f.departure_at, f.arrival_at
\gset
-- Take the seat in the cabin, only if the cabin (plus authorised overbooking) has room.
UPDATE flight_cabins SET held = held + 1
  WHERE id = :cabin_id AND held + sold + 1 <= capacity + overbooking_limit
  RETURNING cabin_code
\gset
INSERT INTO orders (id, status, adults, children, infants, total_amount, currency, expires_at, created_at)
  VALUES (gen_random_uuid(), 'held', 1, 0, 0, :fare_amount, :currency, now() + interval '15 minutes', now())
  RETURNING id AS order_id
\gset
INSERT INTO order_segments (order_id, segment_no, flight_id, booking_class, booking_class_id, cabin, cabin_id,
                            seats, fare_amount, currency)
  VALUES (:order_id, 1, :flight_id, :code, :bc_id, :cabin_code, :cabin_id, 1, :fare_amount, :currency);
INSERT INTO outbox (event_id, type, version, context, occurred_at, aggregate_id, correlation_id, data)
  VALUES (gen_random_uuid(), 'hold.created', 1, 'booking', now(), :order_id, md5(random()::text),
          jsonb_build_object('order_id', :order_id::text, 'expires_at', now() + interval '15 minutes', 'seats', 1,
                             'segments', jsonb_build_array(jsonb_build_object('flight_id', :flight_id::text,
                                                                              'booking_class', :code::text)),
                             'total', jsonb_build_object('amount', :fare_amount::int, 'currency', :currency::text)));
INSERT INTO outbox (event_id, type, version, context, occurred_at, aggregate_id, correlation_id, data)
  VALUES (gen_random_uuid(), 'inventory.changed', 1, 'inventory', now(), :flight_id, md5(random()::text),
          jsonb_build_object('flight_ids', jsonb_build_array(:flight_id::text), 'reason', 'hold',
                             'order_id', :order_id::text));
COMMIT;
