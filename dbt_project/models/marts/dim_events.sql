select event_id, name, kind, venue_neighbourhood_id, start_ts, end_ts, start_date, end_date, expected_attendance
from {{ ref('stg_events') }}
