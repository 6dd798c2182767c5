-- The identity-first onboarding funnel per pass type × home neighbourhood × issue month:
-- issued → each verified attribute → first use (first accepted scan). Aggregates only: no
-- pass_id, no birth year.
with passes as (
    select * from {{ ref('stg_pass_onboarding') }}
),

first_use as (
    select pass_id, min(event_ts) as first_used_ts
    from {{ ref('stg_pass_scans') }}
    where is_accepted
    group by pass_id
),

joined as (
    select
        p.pass_type,
        p.home_neighbourhood_id,
        cast(date_trunc('month', p.issued_date) as date) as issue_month,
        p.issued_ts,
        p.residency_verified_ts,
        p.payment_verified_ts,
        p.accessibility_verified_ts,
        f.first_used_ts
    from passes as p
    left join first_use as f on f.pass_id = p.pass_id
)

select
    pass_type,
    home_neighbourhood_id,
    issue_month,
    count(*) as passes_issued,
    count(residency_verified_ts) as residency_verified,
    count(payment_verified_ts) as payment_verified,
    count(accessibility_verified_ts) as accessibility_verified,
    count(*) filter (where residency_verified_ts is not null and payment_verified_ts is not null) as residency_and_payment_verified,
    count(first_used_ts) as first_used,
    cast(count(first_used_ts) / count(*) as double) as adoption_rate,
    cast(median(epoch(residency_verified_ts) - epoch(issued_ts)) / 3600.0 as double) as median_hours_to_residency,
    cast(median(epoch(payment_verified_ts) - epoch(issued_ts)) / 3600.0 as double) as median_hours_to_payment,
    cast(median(epoch(first_used_ts) - epoch(issued_ts)) / 3600.0 as double) as median_hours_to_first_use
from joined
group by all
