{{ config(severity='warn', meta={'dagster': {'ref': {'name': 'hub_utilisation_daily'}}}) }}
-- The flows alone (yesterday's stock + deposits − pickups − returns) against what the lockers
-- count at night: per hub, a mean gap over 0.05 of its space means readings go missing (a
-- lost file, returns not reported) or a sensor is off. The stock estimate is reset to the
-- count anyway (stock_adjustment_units); warn so the data team looks.
select hub_id, avg(abs(ratio - night_occupancy_ratio)) as mean_gap, count(*) as nights
from (
    {{ hub_nights('closing_stock_units - stock_adjustment_units') }}
) as nights
group by hub_id
having avg(abs(ratio - night_occupancy_ratio)) > 0.05
