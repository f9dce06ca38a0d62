-- Equivalence corpus: every query must give the same answer on the federation (noise none,
-- min cell 1) as DuckDB on the pooled data.  Each query is preceded by one metadata line
--   -- name: <unique id> ; ordered: true|false
-- "ordered: true" only where ORDER BY fully determines the row order (tie-breakers included).
-- Lines before the first "-- name:" line are ignored.  Schema: tests/equivalence/conftest.py.

-- ============================================================================================
-- Counting

-- name: count_all_patients ; ordered: false
SELECT COUNT(*) AS n_patients FROM patients;

-- name: count_all_unaliased ; ordered: false
SELECT COUNT(*) FROM patients;

-- name: count_nullable_columns ; ordered: false
SELECT COUNT(*) AS n, COUNT(bmi) AS n_with_bmi, COUNT(smoker) AS n_with_smoking_status
FROM patients;

-- name: count_by_sex ; ordered: false
SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex;

-- name: count_by_sex_region ; ordered: false
SELECT sex, region, COUNT(*) FROM patients GROUP BY sex, region;

-- name: count_missing_lab_values_by_test ; ordered: false
SELECT test_name, COUNT(*) AS n_tests, COUNT(value) AS n_with_value,
       COUNT(*) - COUNT(value) AS n_missing
FROM labs
GROUP BY test_name;

-- name: count_distinct_tested_patients ; ordered: false
SELECT COUNT(DISTINCT patient_id) AS n_tested FROM labs;

-- name: count_distinct_patients_per_test ; ordered: false
SELECT test_name, COUNT(*) AS n_measurements, COUNT(DISTINCT patient_id) AS n_patients
FROM labs
GROUP BY test_name;

-- name: count_distinct_diabetic_patients_join ; ordered: false
SELECT COUNT(DISTINCT p.patient_id) AS n_type2_diabetes
FROM patients p
JOIN diagnoses d ON d.patient_id = p.patient_id
WHERE d.icd10_code LIKE 'E11%';

-- name: count_distinct_by_chapter_and_sex ; ordered: false
SELECT p.sex, d.icd10_chapter, COUNT(*) AS n_diagnoses, COUNT(DISTINCT p.patient_id) AS n_patients
FROM patients AS p
JOIN diagnoses AS d ON p.patient_id = d.patient_id
GROUP BY p.sex, d.icd10_chapter;

-- name: count_case_expression ; ordered: false
SELECT test_name,
       COUNT(CASE WHEN value > 48 THEN 1 END) AS n_above_48,
       COUNT(CASE WHEN value <= 48 THEN 1 END) AS n_at_most_48
FROM labs
GROUP BY test_name;

-- ============================================================================================
-- SUM, AVG, MIN, MAX

-- name: sum_avg_age_by_region ; ordered: false
SELECT region, SUM(age) AS total_age, AVG(age) AS mean_age FROM patients GROUP BY region;

-- name: avg_bmi_by_smoking_nulls_first ; ordered: true
SELECT smoker, AVG(bmi) AS mean_bmi, COUNT(bmi) AS n
FROM patients
GROUP BY smoker
ORDER BY smoker NULLS FIRST;

-- name: lab_summary_by_test_and_unit ; ordered: false
SELECT test_name, unit, AVG(value), MIN(value), MAX(value)
FROM labs
GROUP BY test_name, unit;

-- name: min_max_age_global ; ordered: false
SELECT MIN(age) AS youngest, MAX(age) AS oldest, MIN(birth_year) AS first_cohort,
       MAX(birth_year) AS last_cohort
FROM patients;

-- name: min_max_diagnosis_dates ; ordered: false
SELECT MIN(diagnosis_date) AS first_diagnosis, MAX(diagnosis_date) AS last_diagnosis
FROM diagnoses;

-- name: min_max_codes_per_chapter ; ordered: false
SELECT icd10_chapter, MIN(icd10_code) AS first_code, MAX(icd10_code) AS last_code,
       COUNT(*) AS n
FROM diagnoses
GROUP BY icd10_chapter;

-- name: treatment_dates_by_atc_group ; ordered: false
SELECT atc_group, MIN(start_date) AS first_start, MAX(end_date) AS last_end,
       COUNT(end_date) AS n_finished, COUNT(*) AS n
FROM treatments
GROUP BY atc_group;

-- name: deaths_and_followup_by_sex ; ordered: false
SELECT p.sex, SUM(o.death) AS deaths, SUM(o.followup_days) AS person_days,
       AVG(o.followup_days) AS mean_followup, MAX(o.followup_days) AS max_followup
FROM patients p
JOIN outcomes o USING (patient_id)
GROUP BY p.sex;

-- ============================================================================================
-- Variances and standard deviations

-- name: variance_family_age_by_sex ; ordered: false
SELECT sex, VAR_SAMP(age) AS var_samp_age, VAR_POP(age) AS var_pop_age,
       STDDEV_SAMP(age) AS sd_samp_age, STDDEV_POP(age) AS sd_pop_age
FROM patients
GROUP BY sex;

-- name: variance_aliases_followup ; ordered: false
SELECT VARIANCE(followup_days) AS var_followup, STDDEV(followup_days) AS sd_followup
FROM outcomes;

-- name: bmi_spread_by_region ; ordered: false
SELECT region, AVG(bmi) AS mean_bmi, STDDEV_SAMP(bmi) AS sd_bmi, VAR_POP(bmi) AS var_pop_bmi
FROM patients
GROUP BY region;

-- name: lab_spread_by_test_ordered ; ordered: true
SELECT test_name, COUNT(value) AS n, AVG(value) AS mean, STDDEV_SAMP(value) AS sd,
       VAR_SAMP(value) AS var
FROM labs
GROUP BY test_name
ORDER BY test_name;

-- name: variance_fine_groups_zero_and_single ; ordered: false
SELECT sex, birth_year, COUNT(*) AS n, VAR_SAMP(age) AS var_age, STDDEV_POP(age) AS sd_pop_age,
       STDDEV_SAMP(age) AS sd_samp_age
FROM patients
GROUP BY sex, birth_year;

-- name: variance_empty_input ; ordered: false
SELECT VAR_SAMP(bmi) AS vs, VAR_POP(bmi) AS vp, STDDEV_SAMP(bmi) AS ss, STDDEV_POP(bmi) AS sp
FROM patients
WHERE age > 500;

-- name: variance_filtered_glucose ; ordered: false
SELECT p.sex,
       VAR_SAMP(l.value) FILTER (WHERE l.test_name = 'glucose') AS var_glucose,
       STDDEV_POP(l.value) FILTER (WHERE l.test_name = 'HbA1c') AS sd_hba1c
FROM patients p
JOIN labs l ON l.patient_id = p.patient_id
GROUP BY p.sex;

-- ============================================================================================
-- Expressions inside aggregates

-- name: current_smokers_by_region_sum_case ; ordered: false
SELECT region,
       SUM(CASE WHEN smoker = 'current' THEN 1 ELSE 0 END) AS current_smokers,
       COUNT(*) AS n
FROM patients
GROUP BY region;

-- name: sum_of_products ; ordered: false
SELECT sex, SUM(age * bmi) AS sum_age_bmi, SUM(bmi * bmi) AS sum_bmi_sq, SUM(age * age) AS sum_age_sq
FROM patients
GROUP BY sex;

-- name: avg_linear_expression ; ordered: false
SELECT test_name, AVG(value * 2 + 1) AS shifted_mean, SUM(value / 2) AS half_total
FROM labs
GROUP BY test_name;

-- name: obesity_share_avg_case ; ordered: false
SELECT sex, AVG(CASE WHEN bmi >= 30 THEN 1.0 ELSE 0.0 END) AS obese_share
FROM patients
WHERE bmi IS NOT NULL
GROUP BY sex;

-- name: treatment_duration_date_arithmetic ; ordered: false
SELECT atc_group, SUM(end_date - start_date) AS total_days,
       AVG(datediff('day', start_date, end_date)) AS mean_days
FROM treatments
WHERE end_date IS NOT NULL
GROUP BY atc_group;

-- name: coalesce_and_cast_inside_aggregates ; ordered: false
SELECT region, SUM(COALESCE(bmi, 0)) AS bmi_or_zero_total,
       AVG(CAST(death AS DOUBLE)) AS death_rate
FROM patients
JOIN outcomes USING (patient_id)
GROUP BY region;

-- ============================================================================================
-- Expressions over aggregates

-- name: mortality_percent_by_region ; ordered: false
SELECT p.region, 100.0 * SUM(o.death) / COUNT(*) AS mortality_pct
FROM patients p
JOIN outcomes o USING (patient_id)
GROUP BY p.region;

-- name: mean_from_sum_over_count ; ordered: false
SELECT sex, SUM(age) / COUNT(*) AS mean_age, SUM(bmi) / COUNT(bmi) AS mean_bmi
FROM patients
GROUP BY sex;

-- name: rounded_mean_bmi ; ordered: false
SELECT region, ROUND(AVG(bmi), 1) AS mean_bmi, ROUND(AVG(age)) AS mean_age
FROM patients
GROUP BY region;

-- name: current_smoker_share_nullif ; ordered: false
SELECT sex,
       SUM(CASE WHEN smoker = 'current' THEN 1 ELSE 0 END) * 1.0 / NULLIF(COUNT(smoker), 0)
         AS current_share
FROM patients
GROUP BY sex;

-- name: coefficient_of_variation ; ordered: false
SELECT test_name, STDDEV_SAMP(value) / AVG(value) AS cv FROM labs GROUP BY test_name;

-- name: arithmetic_between_aggregates_global ; ordered: false
SELECT COUNT(*) - COUNT(bmi) AS missing_bmi, MAX(age) - MIN(age) AS age_range,
       SUM(age) + SUM(birth_year) AS sum_check, 2 * COUNT(*) AS twice_n
FROM patients;

-- name: unaliased_expression_over_aggregates ; ordered: false
SELECT sex, 100.0 * SUM(CASE WHEN bmi >= 30 THEN 1 ELSE 0 END) / COUNT(bmi)
FROM patients
GROUP BY sex;

-- ============================================================================================
-- FILTER (WHERE ...)

-- name: filter_counts_by_smoking ; ordered: false
SELECT sex,
       COUNT(*) FILTER (WHERE smoker = 'current') AS current_smokers,
       COUNT(*) FILTER (WHERE smoker = 'never') AS never_smokers,
       COUNT(*) AS n
FROM patients
GROUP BY sex;

-- name: filter_avg_bmi_by_age ; ordered: false
SELECT region,
       AVG(bmi) FILTER (WHERE age >= 65) AS bmi_65_plus,
       AVG(bmi) FILTER (WHERE age < 65) AS bmi_under_65
FROM patients
GROUP BY region;

-- name: filter_lab_panel_per_sex ; ordered: false
SELECT p.sex,
       AVG(l.value) FILTER (WHERE l.test_name = 'HbA1c') AS mean_hba1c,
       AVG(l.value) FILTER (WHERE l.test_name = 'LDL') AS mean_ldl,
       COUNT(*) FILTER (WHERE l.test_name IN ('creatinine', 'eGFR')) AS n_kidney_tests
FROM patients p
JOIN labs l ON p.patient_id = l.patient_id
GROUP BY p.sex;

-- name: filter_sum_deaths_by_followup ; ordered: false
SELECT SUM(death) FILTER (WHERE followup_days < 365) AS deaths_first_year,
       SUM(death) FILTER (WHERE followup_days >= 365) AS deaths_later,
       SUM(death) AS deaths
FROM outcomes;

-- ============================================================================================
-- WHERE

-- name: where_and_or ; ordered: false
SELECT sex, COUNT(*) AS n
FROM patients
WHERE (age >= 50 AND bmi > 30) OR smoker = 'current'
GROUP BY sex;

-- name: where_not_in_list_drops_nulls ; ordered: false
SELECT region, COUNT(*) AS ever_smokers
FROM patients
WHERE smoker NOT IN ('never')
GROUP BY region;

-- name: where_between_ages ; ordered: false
SELECT sex, AVG(bmi) AS mean_bmi, COUNT(*) AS n
FROM patients
WHERE age BETWEEN 40 AND 64
GROUP BY sex;

-- name: where_like_circulatory_codes ; ordered: false
SELECT icd10_code, COUNT(*) AS n FROM diagnoses WHERE icd10_code LIKE 'I%' GROUP BY icd10_code;

-- name: where_is_null_bmi ; ordered: false
SELECT region, COUNT(*) AS n_missing_bmi FROM patients WHERE bmi IS NULL GROUP BY region;

-- name: where_date_range ; ordered: false
SELECT icd10_chapter, COUNT(*) AS n
FROM diagnoses
WHERE diagnosis_date >= DATE '2020-01-01' AND diagnosis_date < DATE '2021-01-01'
GROUP BY icd10_chapter;

-- name: where_not_and_is_not_null ; ordered: false
SELECT smoker, COUNT(*) AS n, AVG(age) AS mean_age
FROM patients
WHERE NOT (sex = 'F') AND smoker IS NOT NULL
GROUP BY smoker;

-- name: where_date_between_string_literals ; ordered: false
SELECT test_name, COUNT(*) AS n, AVG(value) AS mean
FROM labs
WHERE lab_date BETWEEN '2019-01-01' AND '2019-12-31'
GROUP BY test_name;

-- name: where_in_list_lipids ; ordered: false
SELECT test_name, unit, AVG(value) AS mean, COUNT(value) AS n
FROM labs
WHERE test_name IN ('HDL', 'LDL') AND value IS NOT NULL
GROUP BY test_name, unit;

-- name: where_global_no_group ; ordered: false
SELECT COUNT(*) AS n, AVG(bmi) AS mean_bmi
FROM patients
WHERE sex = 'F' AND age > 70 AND NOT smoker = 'current';

-- ============================================================================================
-- GROUP BY forms

-- name: group_by_expression_decade ; ordered: false
SELECT floor(age / 10) * 10 AS decade, COUNT(*) AS n
FROM patients
GROUP BY floor(age / 10) * 10;

-- name: group_by_case_age_band_alias ; ordered: false
SELECT CASE WHEN age < 18 THEN '0-17'
            WHEN age < 40 THEN '18-39'
            WHEN age < 65 THEN '40-64'
            ELSE '65+' END AS age_band,
       COUNT(*) AS n, AVG(bmi) AS mean_bmi
FROM patients
GROUP BY age_band;

-- name: group_by_case_expression_repeated ; ordered: false
SELECT sex,
       CASE WHEN bmi < 18.5 THEN 'underweight' WHEN bmi < 25 THEN 'normal'
            WHEN bmi < 30 THEN 'overweight' WHEN bmi >= 30 THEN 'obese' END,
       COUNT(*)
FROM patients
GROUP BY sex,
         CASE WHEN bmi < 18.5 THEN 'underweight' WHEN bmi < 25 THEN 'normal'
              WHEN bmi < 30 THEN 'overweight' WHEN bmi >= 30 THEN 'obese' END;

-- name: group_by_year_function ; ordered: false
SELECT year(diagnosis_date) AS diagnosis_year, COUNT(*) AS n
FROM diagnoses
GROUP BY year(diagnosis_date);

-- name: group_by_extract_year_quarter ; ordered: false
SELECT EXTRACT(year FROM lab_date) AS yr, EXTRACT(quarter FROM lab_date) AS qtr,
       COUNT(*) AS n_tests
FROM labs
WHERE test_name = 'HbA1c'
GROUP BY EXTRACT(year FROM lab_date), EXTRACT(quarter FROM lab_date);

-- name: group_by_date_trunc_month ; ordered: true
SELECT date_trunc('month', diagnosis_date) AS month, COUNT(*) AS n
FROM diagnoses
WHERE diagnosis_date >= DATE '2020-01-01' AND diagnosis_date < DATE '2021-01-01'
GROUP BY date_trunc('month', diagnosis_date)
ORDER BY month;

-- name: group_by_ordinals ; ordered: false
SELECT sex, smoker, COUNT(*) AS n, AVG(bmi) AS mean_bmi FROM patients GROUP BY 1, 2;

-- name: group_by_all ; ordered: false
SELECT region, sex, AVG(age) AS mean_age, COUNT(*) AS n FROM patients GROUP BY ALL;

-- name: group_by_all_with_expression ; ordered: false
SELECT year(lab_date) AS yr, test_name, COUNT(*) AS n FROM labs GROUP BY ALL;

-- name: group_by_key_not_selected ; ordered: false
SELECT COUNT(*) AS n, AVG(age) AS mean_age FROM patients GROUP BY region;

-- name: group_by_string_function ; ordered: false
SELECT substr(icd10_code, 1, 1) AS code_letter, COUNT(*) AS n
FROM diagnoses
GROUP BY code_letter;

-- name: group_by_year_of_birth_alias_ordinal_mix ; ordered: false
SELECT (birth_year // 10) * 10 AS birth_decade, sex, COUNT(*) AS n
FROM patients
GROUP BY birth_decade, 2;

-- ============================================================================================
-- HAVING

-- name: having_on_count ; ordered: false
SELECT icd10_code, COUNT(*) AS n FROM diagnoses GROUP BY icd10_code HAVING COUNT(*) >= 100;

-- name: having_aggregate_not_selected ; ordered: false
SELECT region, COUNT(*) AS n FROM patients GROUP BY region HAVING AVG(bmi) > 27;

-- name: having_on_alias ; ordered: false
SELECT test_name, AVG(value) AS mean_value FROM labs GROUP BY test_name HAVING mean_value > 10;

-- name: having_compound ; ordered: false
SELECT p.region, COUNT(*) AS n, SUM(o.death) AS deaths
FROM patients p JOIN outcomes o USING (patient_id)
GROUP BY p.region
HAVING COUNT(*) > 50 AND SUM(o.death) >= 5;

-- name: having_removes_every_group ; ordered: false
SELECT region, COUNT(*) AS n FROM patients GROUP BY region HAVING COUNT(*) > 100000;

-- name: having_on_variance ; ordered: false
SELECT test_name, COUNT(value) AS n FROM labs GROUP BY test_name HAVING STDDEV_SAMP(value) > 1;

-- ============================================================================================
-- ORDER BY, LIMIT, OFFSET

-- name: order_by_alias_desc_with_tiebreak ; ordered: true
SELECT region, COUNT(*) AS n FROM patients GROUP BY region ORDER BY n DESC, region;

-- name: order_by_aggregate_not_selected ; ordered: true
SELECT icd10_chapter, COUNT(*) AS n_diagnoses
FROM diagnoses
GROUP BY icd10_chapter
ORDER BY COUNT(DISTINCT patient_id) DESC, icd10_chapter;

-- name: order_by_ordinals ; ordered: true
SELECT atc_group, COUNT(*) AS n FROM treatments GROUP BY atc_group ORDER BY 2 DESC, 1;

-- name: order_by_desc_nulls_last ; ordered: true
SELECT smoker, COUNT(*) AS n, AVG(age) AS mean_age
FROM patients
GROUP BY smoker
ORDER BY smoker DESC NULLS LAST;

-- name: order_by_two_keys_nulls_first ; ordered: true
SELECT sex, smoker, COUNT(*) AS n
FROM patients
GROUP BY sex, smoker
ORDER BY sex DESC, smoker ASC NULLS FIRST;

-- name: order_by_aggregate_expression ; ordered: true
SELECT region, AVG(bmi) AS mean_bmi
FROM patients
GROUP BY region
ORDER BY AVG(bmi) DESC NULLS LAST, region;

-- name: top5_diagnosis_codes_limit ; ordered: true
SELECT icd10_code, COUNT(*) AS n
FROM diagnoses
GROUP BY icd10_code
ORDER BY n DESC, icd10_code
LIMIT 5;

-- name: limit_offset_tests ; ordered: true
SELECT test_name, COUNT(*) AS n FROM labs GROUP BY test_name ORDER BY test_name LIMIT 3 OFFSET 2;

-- name: offset_without_limit ; ordered: true
SELECT year(diagnosis_date) AS yr, COUNT(*) AS n
FROM diagnoses
GROUP BY yr
ORDER BY yr
OFFSET 3;

-- name: limit_zero ; ordered: true
SELECT sex, COUNT(*) AS n FROM patients GROUP BY sex ORDER BY sex LIMIT 0;

-- name: limit_on_global_aggregate ; ordered: true
SELECT COUNT(*) AS n FROM labs LIMIT 1;

-- name: order_by_age_band_case ; ordered: true
SELECT CASE WHEN age < 40 THEN 'young' WHEN age < 65 THEN 'middle' ELSE 'old' END AS band,
       COUNT(*) AS n, STDDEV_POP(bmi) AS sd_bmi
FROM patients
GROUP BY 1
ORDER BY band DESC;

-- ============================================================================================
-- Site-local joins

-- name: join_using_diagnoses_per_sex ; ordered: false
SELECT p.sex, COUNT(*) AS n_diagnoses FROM patients p JOIN diagnoses d USING (patient_id) GROUP BY p.sex;

-- name: join_on_hba1c_by_age_band ; ordered: false
SELECT CASE WHEN p.age < 50 THEN 'under 50' ELSE '50 and over' END AS age_group,
       AVG(l.value) AS mean_hba1c, COUNT(*) AS n
FROM patients p
JOIN labs l ON l.patient_id = p.patient_id
WHERE l.test_name = 'HbA1c'
GROUP BY age_group;

-- name: left_join_treatments_per_region ; ordered: false
SELECT p.region, COUNT(*) AS n_rows, COUNT(t.atc_code) AS n_treatments,
       COUNT(DISTINCT p.patient_id) AS n_patients
FROM patients p
LEFT JOIN treatments t ON t.patient_id = p.patient_id
GROUP BY p.region;

-- name: left_join_untreated_patients ; ordered: false
SELECT p.sex, COUNT(*) AS n_untreated
FROM patients p
LEFT JOIN treatments t ON t.patient_id = p.patient_id
WHERE t.patient_id IS NULL
GROUP BY p.sex;

-- name: three_table_join_circulatory_outcomes ; ordered: false
SELECT p.sex, COUNT(DISTINCT p.patient_id) AS n_patients, SUM(o.death) AS deaths_per_dx,
       AVG(o.followup_days) AS mean_followup
FROM patients p
JOIN diagnoses d ON d.patient_id = p.patient_id
JOIN outcomes o ON o.patient_id = p.patient_id
WHERE d.icd10_chapter = 'IX'
GROUP BY p.sex;

-- name: join_with_extra_condition_diabetes_drugs ; ordered: false
SELECT t.atc_code, COUNT(*) AS n_pairs, COUNT(DISTINCT t.patient_id) AS n_patients
FROM treatments t
JOIN diagnoses d ON t.patient_id = d.patient_id AND t.start_date >= d.diagnosis_date
WHERE d.icd10_code LIKE 'E11%'
GROUP BY t.atc_code;

-- name: three_table_left_join_labs ; ordered: false
SELECT p.region, COUNT(DISTINCT p.patient_id) AS n_patients, COUNT(l.value) AS n_values,
       SUM(o.death) AS death_rows
FROM patients p
JOIN outcomes o ON o.patient_id = p.patient_id
LEFT JOIN labs l ON l.patient_id = p.patient_id AND l.test_name = 'creatinine'
GROUP BY p.region;

-- name: join_min_max_dates_strings ; ordered: false
SELECT p.sex, MIN(d.diagnosis_date) AS first_dx, MAX(d.icd10_code) AS last_code,
       MIN(p.region) AS first_region
FROM patients p
JOIN diagnoses d USING (patient_id)
GROUP BY p.sex;

-- ============================================================================================
-- Row-level subqueries and CTEs

-- name: from_subquery_bmi_class ; ordered: false
SELECT bmi_class, COUNT(*) AS n, AVG(age) AS mean_age
FROM (SELECT CASE WHEN bmi >= 30 THEN 'obese' ELSE 'not obese' END AS bmi_class, age
      FROM patients
      WHERE bmi IS NOT NULL) AS s
GROUP BY bmi_class;

-- name: cte_adults ; ordered: false
WITH adults AS (SELECT * FROM patients WHERE age >= 18)
SELECT sex, AVG(bmi) AS mean_bmi, COUNT(*) AS n FROM adults GROUP BY sex;

-- name: cte_join_hba1c_patients ; ordered: false
WITH hba1c AS (
  SELECT patient_id, value FROM labs WHERE test_name = 'HbA1c' AND value IS NOT NULL
), older AS (
  SELECT patient_id, sex FROM patients WHERE age >= 60
)
SELECT older.sex, COUNT(*) AS n, AVG(hba1c.value) AS mean_hba1c, MAX(hba1c.value) AS max_hba1c
FROM hba1c JOIN older ON older.patient_id = hba1c.patient_id
GROUP BY older.sex;

-- name: where_in_subquery_diabetes ; ordered: false
SELECT sex, COUNT(*) AS n, AVG(bmi) AS mean_bmi
FROM patients
WHERE patient_id IN (SELECT patient_id FROM diagnoses WHERE icd10_code LIKE 'E11%')
GROUP BY sex;

-- name: where_not_in_subquery_no_antidiabetics ; ordered: false
SELECT region, COUNT(*) AS n
FROM patients
WHERE patient_id NOT IN (SELECT patient_id FROM treatments WHERE atc_group = 'A')
GROUP BY region;

-- name: exists_correlated_high_hba1c ; ordered: false
SELECT region, COUNT(*) AS n
FROM patients p
WHERE EXISTS (SELECT 1 FROM labs l
              WHERE l.patient_id = p.patient_id AND l.test_name = 'HbA1c' AND l.value > 48)
GROUP BY region;

-- name: not_exists_untreated ; ordered: false
SELECT sex, COUNT(*) AS n_untreated, AVG(age) AS mean_age
FROM patients p
WHERE NOT EXISTS (SELECT 1 FROM treatments t WHERE t.patient_id = p.patient_id)
GROUP BY sex;

-- name: cte_with_in_subquery ; ordered: false
WITH heart AS (SELECT patient_id FROM diagnoses WHERE icd10_chapter = 'IX')
SELECT o.death, COUNT(*) AS n, AVG(o.followup_days) AS mean_followup
FROM outcomes o
WHERE o.patient_id IN (SELECT patient_id FROM heart)
GROUP BY o.death;

-- name: subquery_join_inside_from ; ordered: false
SELECT s.test_name, COUNT(*) AS n, AVG(s.value) AS mean
FROM (SELECT l.test_name, l.value, p.sex
      FROM labs l JOIN patients p ON p.patient_id = l.patient_id
      WHERE p.sex = 'F') s
GROUP BY s.test_name;

-- ============================================================================================
-- NULL semantics and empty results

-- name: empty_global_aggregate ; ordered: false
SELECT COUNT(*), SUM(bmi), AVG(bmi) FROM patients WHERE 1 = 0;

-- name: empty_global_many_aggregates ; ordered: false
SELECT COUNT(*) AS n, COUNT(bmi) AS n_bmi, SUM(age) AS sum_age, MIN(age) AS min_age,
       MAX(birth_year) AS max_birth_year, MIN(region) AS min_region,
       COUNT(DISTINCT patient_id) AS n_distinct
FROM patients
WHERE age > 500;

-- name: empty_grouped_no_rows ; ordered: false
SELECT region, COUNT(*) AS n, SUM(bmi) AS s FROM patients WHERE age > 500 GROUP BY region;

-- name: all_null_group_via_case ; ordered: false
SELECT sex, COUNT(*) AS n,
       SUM(CASE WHEN sex = 'F' THEN bmi END) AS female_bmi_sum,
       AVG(CASE WHEN sex = 'F' THEN bmi END) AS female_bmi_mean,
       COUNT(CASE WHEN sex = 'F' THEN bmi END) AS female_bmi_n,
       VAR_SAMP(CASE WHEN sex = 'F' THEN age END) AS female_age_var
FROM patients
GROUP BY sex;

-- name: empty_filter_inside_groups ; ordered: false
SELECT region, COUNT(*) FILTER (WHERE age > 500) AS n_none, SUM(bmi) FILTER (WHERE age > 500) AS s_none,
       AVG(age) FILTER (WHERE age > 500) AS avg_none, COUNT(*) AS n
FROM patients
GROUP BY region;

-- name: all_null_input_global ; ordered: false
SELECT COUNT(*) AS n, COUNT(bmi) AS n_bmi, SUM(bmi) AS s, AVG(bmi) AS a, MIN(bmi) AS lo,
       STDDEV_SAMP(bmi) AS sd
FROM patients
WHERE bmi IS NULL;

-- name: null_group_key_smoker ; ordered: false
SELECT smoker, COUNT(*) AS n, SUM(age) AS s FROM patients GROUP BY smoker;

-- name: empty_join_result ; ordered: false
SELECT COUNT(*) AS n, AVG(l.value) AS mean
FROM patients p JOIN labs l ON l.patient_id = p.patient_id
WHERE l.test_name = 'no such test';

-- ============================================================================================
-- Output types: integers, floats, dates, strings

-- name: output_types_mixed ; ordered: false
SELECT COUNT(*) AS n, SUM(p.age) AS sum_int, SUM(p.bmi) AS sum_double, AVG(p.age) AS avg_int,
       MIN(l.lab_date) AS first_lab, MAX(l.lab_date) AS last_lab, MIN(l.test_name) AS first_test
FROM patients p JOIN labs l ON l.patient_id = p.patient_id;

-- name: output_types_per_group ; ordered: true
SELECT test_name, MIN(lab_date) AS first_date, MAX(unit) AS unit, SUM(CAST(value > 0 AS INTEGER)) AS n_pos,
       MAX(value) AS max_value
FROM labs
GROUP BY test_name
ORDER BY test_name;

-- name: max_string_postcode_by_region ; ordered: false
SELECT region, MIN(postcode) AS min_postcode, MAX(postcode) AS max_postcode FROM patients GROUP BY region;

-- ============================================================================================
-- More clinical questions mixing the constructs above

-- name: hba1c_trend_in_type2_diabetes ; ordered: true
SELECT EXTRACT(year FROM l.lab_date) AS yr, ROUND(AVG(l.value), 2) AS mean_hba1c,
       COUNT(DISTINCT l.patient_id) AS n_patients
FROM labs l
WHERE l.test_name = 'HbA1c'
  AND EXISTS (SELECT 1 FROM diagnoses d WHERE d.patient_id = l.patient_id AND d.icd10_code LIKE 'E11%')
GROUP BY EXTRACT(year FROM l.lab_date)
ORDER BY yr;

-- name: treatment_starts_per_year_and_group ; ordered: true
SELECT date_trunc('year', start_date) AS start_year, atc_group, COUNT(*) AS n,
       SUM(CASE WHEN end_date IS NULL THEN 1 ELSE 0 END) AS ongoing
FROM treatments
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: followup_weighted_bmi ; ordered: false
SELECT region, SUM(bmi * followup_days) / SUM(followup_days) AS weighted_bmi,
       SUM(followup_days) / COUNT(*) AS mean_followup
FROM patients JOIN outcomes USING (patient_id)
WHERE bmi IS NOT NULL
GROUP BY region;

-- name: deaths_per_1000_person_years ; ordered: false
SELECT p.sex, 1000.0 * SUM(o.death) / (SUM(o.followup_days) / 365.25) AS deaths_per_1000_py,
       SUM(o.death * o.followup_days) AS death_weighted_days
FROM patients p JOIN outcomes o ON o.patient_id = p.patient_id
GROUP BY p.sex;

-- name: abnormal_kidney_results_or ; ordered: false
SELECT p.sex, l.test_name, COUNT(*) AS n_abnormal
FROM labs l JOIN patients p ON p.patient_id = l.patient_id
WHERE (l.test_name = 'creatinine' AND l.value > 110) OR (l.test_name = 'eGFR' AND l.value < 60)
GROUP BY p.sex, l.test_name;

-- name: ever_smokers_not_or ; ordered: false
SELECT region, COUNT(*) AS n, ROUND(STDDEV_SAMP(age), 2) AS sd_age
FROM patients
WHERE NOT (smoker = 'never' OR smoker IS NULL)
GROUP BY region;

-- name: seasonal_respiratory_diagnoses ; ordered: false
SELECT EXTRACT(month FROM diagnosis_date) AS month,
       COUNT(*) FILTER (WHERE icd10_chapter = 'X') AS respiratory, COUNT(*) AS n
FROM diagnoses
GROUP BY 1;

-- name: cardio_drugs_without_cardio_diagnosis ; ordered: false
SELECT p.region, COUNT(*) AS n
FROM patients p
WHERE EXISTS (SELECT 1 FROM treatments t WHERE t.patient_id = p.patient_id AND t.atc_group = 'C')
  AND NOT EXISTS (SELECT 1 FROM diagnoses d WHERE d.patient_id = p.patient_id AND d.icd10_chapter = 'IX')
GROUP BY p.region;

-- name: lab_second_moments ; ordered: false
SELECT test_name, SUM(value * value) AS sum_sq, SUM(value) AS s, COUNT(value) AS n,
       VAR_POP(value) AS var_pop
FROM labs
GROUP BY test_name;

-- name: treatment_years_having_sum ; ordered: true
SELECT year(start_date) AS start_year, COUNT(*) AS n, COUNT(DISTINCT patient_id) AS n_patients
FROM treatments
GROUP BY year(start_date)
HAVING SUM(CASE WHEN atc_group = 'A' THEN 1 ELSE 0 END) > 0
ORDER BY start_year DESC;

-- name: cte_cohort_global_rates ; ordered: false
WITH cohort AS (
  SELECT p.patient_id, p.age, p.bmi, o.death
  FROM patients p JOIN outcomes o ON o.patient_id = p.patient_id
  WHERE p.patient_id IN (SELECT patient_id FROM diagnoses WHERE icd10_chapter IN ('IV', 'IX'))
)
SELECT COUNT(*) AS n, 100.0 * SUM(death) / COUNT(*) AS mortality_pct, AVG(age) AS mean_age,
       VAR_SAMP(age) AS var_age, COUNT(bmi) AS n_bmi
FROM cohort;

-- name: bmi_bands_by_sex_ordered ; ordered: true
SELECT sex,
       CASE WHEN bmi IS NULL THEN 'unknown' WHEN bmi < 25 THEN '<25'
            WHEN bmi < 30 THEN '25-30' ELSE '30+' END AS bmi_band,
       COUNT(*) AS n, AVG(age) AS mean_age
FROM patients
GROUP BY ALL
ORDER BY sex, bmi_band;
