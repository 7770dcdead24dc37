//! Searching the job store as the dashboard and `spoolctl tasks` do: every
//! filter, alone and combined, paged with cursors in both orders, and ids
//! by prefix. Every test runs on SQLite and on PostgreSQL; see
//! `common/mod.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use spool_broker::store::{
    Finished, IdPrefix, JobQuery, JobRecord, JobStatus, JobStore, NewJob, Started, WorkerId,
};
use spool_broker::{Envelope, QueueName, TaskId, Timestamp};

store_suite!(
    every_filter_pages_in_order_without_gaps,
    ids_are_found_by_prefix,
);

const T0: u64 = 1_750_000_000_000;

const STATUSES: [JobStatus; 6] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Dead,
    JobStatus::Retrying,
];

/// 300 records: three per millisecond (ties broken by id), names, queues,
/// tenants and statuses in different cycles so that every combination
/// occurs.
async fn seed(store: &JobStore) -> Vec<(Envelope, JobStatus)> {
    let names = [
        "video.transcode",
        "video.vmaf",
        "thumbs.make",
        "report.monthly",
    ];
    let queues = ["default", "gpu", "cpu"];
    let worker = WorkerId::new("host", 1);
    let mut seeded = Vec::new();
    let (mut enqueued, mut started, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..300_u64 {
        let i_ = usize::try_from(i).unwrap();
        let mut e = Envelope::new(
            names[i_ % 4],
            QueueName::new(queues[i_ % 3]).unwrap(),
            vec![],
        );
        e.tenant = match i % 5 {
            0 | 1 => Some("acme".into()),
            2 => Some("globex".into()),
            _ => None,
        };
        e.created_at = Timestamp::from_millis(T0 + i / 3);
        let status = STATUSES[i_ % 7 % 6];
        let at = Timestamp::from_millis(T0 + 10_000);
        match status {
            JobStatus::Queued => enqueued.push(NewJob::from_envelope(&e)),
            JobStatus::Running => started.push(Started::from_envelope(&e, &worker, at)),
            status => outcomes.push(Finished::from_envelope(&e, status, at)),
        }
        seeded.push((e, status));
    }
    store.record_enqueued(&enqueued).await.unwrap();
    store.record_started(&started).await.unwrap();
    store.record_outcomes(&outcomes).await.unwrap();
    seeded
}

/// Every page of `query`, followed by cursor, concatenated.
async fn pages(store: &JobStore, mut query: JobQuery) -> Vec<JobRecord> {
    let mut records = Vec::new();
    loop {
        let page = store.query(&query).await.unwrap();
        assert!(page.records.len() <= query.limit);
        records.extend(page.records);
        match page.next {
            Some(cursor) => query.after = Some(cursor),
            None => return records,
        }
    }
}

fn matches(query: &JobQuery, e: &Envelope, status: JobStatus) -> bool {
    query
        .status
        .as_ref()
        .is_none_or(|s| s.is_empty() || s.contains(&status))
        && query.queue.as_ref().is_none_or(|q| *q == e.queue)
        && query
            .tenant
            .as_ref()
            .is_none_or(|t| e.tenant.as_ref() == Some(t))
        && query.name.as_ref().is_none_or(|n| *n == e.name)
        && query.since.is_none_or(|s| e.created_at >= s)
        && query.until.is_none_or(|u| e.created_at < u)
}

async fn every_filter_pages_in_order_without_gaps(store: JobStore, _url: String) {
    let seeded = seed(&store).await;
    let t = |offset: u64| Some(Timestamp::from_millis(T0 + offset));
    let queries = [
        JobQuery::new(),
        JobQuery::new().status([JobStatus::Failed]),
        JobQuery::new().status([JobStatus::Failed, JobStatus::Dead]),
        JobQuery::new().status([JobStatus::Queued, JobStatus::Running, JobStatus::Retrying]),
        JobQuery::new().queue(QueueName::new("gpu").unwrap()),
        JobQuery::new()
            .queue(QueueName::new("gpu").unwrap())
            .status([JobStatus::Succeeded, JobStatus::Dead]),
        JobQuery::new().name("video.vmaf"),
        JobQuery::new().tenant("acme"),
        JobQuery::new().tenant("globex").status([JobStatus::Failed]),
        JobQuery::new().created_between(t(20), t(70)),
        JobQuery::new()
            .name("thumbs.make")
            .created_between(t(10), None),
        JobQuery::new()
            .tenant("acme")
            .name("video.transcode")
            .status([JobStatus::Succeeded, JobStatus::Queued])
            .created_between(None, t(90)),
    ];
    for query in queries {
        for oldest_first in [false, true] {
            for limit in [7, 100] {
                let mut query = query.clone().limit(limit);
                query.oldest_first = oldest_first;
                let found = pages(&store, query.clone()).await;
                let mut expected: Vec<(Timestamp, TaskId)> = seeded
                    .iter()
                    .filter(|(e, status)| matches(&query, e, *status))
                    .map(|(e, _)| (e.created_at, e.id))
                    .collect();
                expected.sort();
                if !oldest_first {
                    expected.reverse();
                }
                let found: Vec<(Timestamp, TaskId)> =
                    found.iter().map(|r| (r.created_at, r.id)).collect();
                assert!(!expected.is_empty(), "{query:?}");
                assert_eq!(found, expected, "{query:?}");
            }
        }
    }
}

async fn ids_are_found_by_prefix(store: JobStore, _url: String) {
    let seeded = seed(&store).await;
    let target = seeded[123].0.id;
    let text = target.to_string();

    // The whole id, with or without dashes, in either case.
    for full in [text.clone(), text.replace('-', ""), text.to_uppercase()] {
        let prefix: IdPrefix = full.parse().unwrap();
        let found = store
            .query(&JobQuery::new().id_prefix(prefix))
            .await
            .unwrap();
        assert_eq!(found.records.len(), 1, "{full}");
        assert_eq!(found.records[0].id, target);
    }

    // Shorter prefixes find every id that starts so, and nothing else.
    for len in [1, 8, 11, 13, 20, 30] {
        let prefix_text: String = text.chars().take(len).collect();
        let prefix: IdPrefix = prefix_text.parse().unwrap();
        let found = pages(&store, JobQuery::new().id_prefix(prefix).limit(50)).await;
        let digits = prefix_text.replace('-', "");
        let mut expected: Vec<TaskId> = seeded
            .iter()
            .map(|(e, _)| e.id)
            .filter(|id| id.to_string().replace('-', "").starts_with(&digits))
            .collect();
        let mut found: Vec<TaskId> = found.iter().map(|r| r.id).collect();
        assert!(expected.contains(&target));
        expected.sort();
        found.sort();
        assert_eq!(found, expected, "prefix {prefix_text}");
    }

    // With other filters.
    let status = seeded[123].1;
    let prefix: IdPrefix = text[..13].parse().unwrap();
    let other = STATUSES.iter().find(|s| **s != status).copied().unwrap();
    let hit = store
        .query(&JobQuery::new().id_prefix(prefix).status([status]))
        .await
        .unwrap();
    assert!(hit.records.iter().any(|r| r.id == target));
    assert!(hit.records.iter().all(|r| r.status == status));
    let miss = store
        .query(&JobQuery::new().id_prefix(prefix).status([other]))
        .await
        .unwrap();
    assert!(miss.records.iter().all(|r| r.id != target));

    // Not an id prefix.
    for bad in [
        "",
        "-",
        "xyz",
        "0193a7c4-5e1f-7d2a-9b3c-4d5e6f7081920",
        "01 93",
    ] {
        assert!(bad.parse::<IdPrefix>().is_err(), "{bad:?}");
    }
    assert_eq!(prefix.to_string(), text[..13].to_owned());
}
