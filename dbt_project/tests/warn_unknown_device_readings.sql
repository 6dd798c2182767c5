{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'stg_telemetry'}}}) }}
-- Readings from devices missing in the registry: ingest should have quarantined them; they are
-- left out of demand. Warn (not fail) so the data team sees them.
select t.device_id, count(*) as readings
from {{ ref('stg_telemetry') }} as t
left join {{ ref('stg_devices') }} as d on d.device_id = t.device_id
where d.device_id is null
group by all
