//! Unique tasks: a duplicate enqueue returns the existing task's id until
//! that task reaches a final outcome or its key expires.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use spool_broker::{QueueName, Task};
use spool_tests::{TestRedis, spawn_worker};
use spool_worker::{TaskContext, TaskError, Worker, WorkerConfig};
use tokio::time::Instant;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Package {
    video: String,
}

impl Task for Package {
    const NAME: &'static str = "test.unique.package";
    type Output = ();
}

#[tokio::test]
async fn duplicates_return_the_queued_tasks_id_until_it_finishes() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    let hour = Duration::from_secs(3600);
    let cat = || Package {
        video: "cat.mp4".into(),
    };
    let first = client.enqueue(cat()).unique(hour).await.unwrap();
    let again = client.enqueue(cat()).unique(hour).await.unwrap();
    let other = client
        .enqueue(Package {
            video: "dog.mp4".into(),
        })
        .unique(hour)
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.ready_total(), 2);

    // Racing producers enqueue exactly one.
    let raced = futures::future::join_all((0..8).map(|_| {
        client
            .enqueue(Package {
                video: "race.mp4".into(),
            })
            .unique(hour)
            .into_future()
    }))
    .await;
    let raced: Vec<_> = raced.into_iter().map(Result::unwrap).collect();
    assert!(raced.iter().all(|id| *id == raced[0]), "{raced:?}");
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.ready_total(), 3);

    let worker = spawn_worker(
        Worker::new(redis.broker.clone(), WorkerConfig::default())
            .register::<Package, _>(|_: Package, _: TaskContext| async { Ok::<_, TaskError>(()) }),
    );
    worker
        .wait_for("the 3 tasks", Duration::from_secs(5), |c| c.succeeded == 3)
        .await;
    worker.stop().await;
    // Finished: the key is free again.
    let later = client.enqueue(cat()).unique(hour).await.unwrap();
    assert_ne!(later, first);
    redis.cleanup().await;
}

#[tokio::test]
async fn an_explicit_key_and_its_expiry() {
    let redis = TestRedis::new().await;
    let client = redis.client();
    // Long enough that the duplicate below comes within it even on a
    // loaded machine; the expiry itself is waited for, not slept.
    let ttl = Duration::from_secs(1);
    let taken = Instant::now();
    let a = client
        .enqueue(Package {
            video: "a.mp4".into(),
        })
        .unique_key("video-42", ttl)
        .await
        .unwrap();
    // Other arguments, same key: still a duplicate.
    let b = client
        .enqueue(Package {
            video: "b.mp4".into(),
        })
        .unique_key("video-42", ttl)
        .await
        .unwrap();
    assert_eq!(a, b);
    // Once the key expires, the same key enqueues a new task.
    let mut c = a;
    let deadline = Instant::now() + ttl + Duration::from_secs(10);
    while c == a {
        assert!(Instant::now() < deadline, "the key never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
        c = client
            .enqueue(Package {
                video: "c.mp4".into(),
            })
            .unique_key("video-42", ttl)
            .await
            .unwrap();
    }
    // Not before its time to live (less Redis' millisecond).
    assert!(
        taken.elapsed() + Duration::from_millis(2) >= ttl,
        "expired early"
    );
    // A delayed unique task holds its key too.
    let d = client
        .enqueue(Package {
            video: "d.mp4".into(),
        })
        .countdown(Duration::from_secs(60))
        .unique_key("later", ttl)
        .await
        .unwrap();
    let e = client
        .enqueue(Package {
            video: "e.mp4".into(),
        })
        .unique_key("later", ttl)
        .await
        .unwrap();
    assert_eq!(d, e);
    assert_eq!(redis.stats(&QueueName::DEFAULT).await.delayed, 1);
    redis.cleanup().await;
}
