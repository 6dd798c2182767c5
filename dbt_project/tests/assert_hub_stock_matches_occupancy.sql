-- Attached to hub_utilisation_daily in Dagster (a failing test blocks what is downstream of it).
{{ config(meta={'dagster': {'ref': {'name': 'hub_utilisation_daily'}}}) }}
-- The stock estimate agrees with what the lockers report: per hub, over the nights with
-- occupancy readings, the mean absolute gap between the hub's estimated stock over its
-- space and the night's occupancy is within 0.05 (5 % of the hub's space).
-- (warn_hub_flows_disagree_with_occupancy compares the flows alone with the count).
select hub_id, avg(abs(ratio - night_occupancy_ratio)) as mean_gap
from (
    {{ hub_nights('closing_stock_units') }}
) as nights
group by hub_id
having avg(abs(ratio - night_occupancy_ratio)) > 0.05
