//! One suite of store semantics, run against both stores: the embedded `MemoryStore` (what the
//! local server and the two-week soak run on) and `DynamoStore` on moto's DynamoDB. The keeper's
//! guarantees rest on these: conditional leases, a token write that never lets an older fetch
//! win, compare-and-drop, a quota that never passes its limit, sessions that expire on read.

use std::sync::Arc;

use e2e::moto;
use tokio::task::JoinSet;
use wxmp::secret::Secret;
use wxmp::store::{DynamoStore, MemoryStore, SessionRecord, Store, StoredToken};

async fn dynamo() -> Arc<dyn Store> {
    let sdk = moto::sdk_config(&moto::endpoint().await).await;
    let client = wxmp::aws::dynamodb(&sdk);
    let table = moto::unique_name("suite");
    wxmp::store::ensure_table(&client, &table)
        .await
        .expect("table created");
    Arc::new(DynamoStore::new(client, table))
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn token(t: &str, expires_at: u64, fetched_at_ms: u64) -> StoredToken {
    StoredToken {
        token: Secret::new(t),
        expires_at,
        fetched_at_ms,
    }
}

async fn leases(store: Arc<dyn Store>, concurrent_updates_are_atomic: bool) {
    let now = 1_000_000u64;
    // Exclusive while it lasts; anyone may take it once it has run out.
    assert!(store.try_lease("l", "a", now, 1000).await.unwrap());
    assert!(!store.try_lease("l", "b", now + 999, 1000).await.unwrap());
    // Only the holder renews it; a renewal moves its end.
    assert!(!store.renew_lease("l", "b", now + 500, 1000).await.unwrap());
    assert!(store.renew_lease("l", "a", now + 500, 1000).await.unwrap());
    assert!(!store.try_lease("l", "b", now + 1200, 1000).await.unwrap());
    assert!(store.try_lease("l", "b", now + 1500, 1000).await.unwrap());
    // The old holder can neither renew nor release what it lost.
    assert!(!store.renew_lease("l", "a", now + 1600, 1000).await.unwrap());
    store.release_lease("l", "a").await.unwrap();
    assert!(!store.try_lease("l", "c", now + 1700, 1000).await.unwrap());
    // The holder's release ends it at once, and a late renewal does not revive it.
    store.release_lease("l", "b").await.unwrap();
    assert!(!store.renew_lease("l", "b", now + 1650, 1000).await.unwrap());
    assert!(store.try_lease("l", "c", now + 1700, 1000).await.unwrap());
    // Nor does a renewal after the lease ran out.
    assert!(!store.renew_lease("l", "c", now + 2700, 1000).await.unwrap());
    // Leases are independent of each other.
    assert!(
        store
            .try_lease("other", "d", now + 1700, 1000)
            .await
            .unwrap()
    );

    if !concurrent_updates_are_atomic {
        return;
    }
    // Concurrent takers: exactly one wins.
    let mut set = JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        set.spawn(async move {
            store
                .try_lease("race", &format!("h{i}"), now, 5000)
                .await
                .unwrap()
        });
    }
    let winners = set.join_all().await.into_iter().filter(|w| *w).count();
    assert_eq!(winners, 1);
}

async fn tokens(store: Arc<dyn Store>) {
    assert_eq!(store.get_token("k").await.unwrap(), None);
    store
        .put_token("k", &token("A", 9000, 1_000))
        .await
        .unwrap();
    assert_eq!(
        store.get_token("k").await.unwrap(),
        Some(token("A", 9000, 1_000))
    );
    // A fetch that started later replaces it, even within the same second...
    store
        .put_token("k", &token("B", 9000, 1_400))
        .await
        .unwrap();
    assert_eq!(
        store.get_token("k").await.unwrap().unwrap().token,
        Secret::new("B")
    );
    // ...and one that started earlier (a slow writer) never does.
    store
        .put_token("k", &token("C", 9999, 1_300))
        .await
        .unwrap();
    assert_eq!(
        store.get_token("k").await.unwrap().unwrap().token,
        Secret::new("B")
    );

    // Compare-and-drop: only while the stored token is the failing one.
    assert!(!store.delete_token_if("k", &Secret::new("A")).await.unwrap());
    assert_eq!(
        store.get_token("k").await.unwrap().unwrap().token,
        Secret::new("B")
    );
    assert!(store.delete_token_if("k", &Secret::new("B")).await.unwrap());
    let now = wxmp::now_secs();
    let after = store.get_token("k").await.unwrap();
    assert!(
        after.as_ref().is_none_or(|t| t.expires_at <= now),
        "a dropped token is gone or expired: {after:?}"
    );
    // The next fetch writes over what was dropped.
    store
        .put_token("k", &token("D", 9000, 2_000))
        .await
        .unwrap();
    assert_eq!(
        store.get_token("k").await.unwrap().unwrap().token,
        Secret::new("D")
    );
    // Keys are independent.
    assert_eq!(store.get_token("k2").await.unwrap(), None);
}

/// `concurrent_updates_are_atomic`: false for moto's DynamoDB, whose threaded server evaluates a
/// condition and applies the write without a lock (seen: 14 of 25 racing `ADD used :one` with
/// `used < 10` succeeded; two racing lease puts both won in about 1 of 40 trials). DynamoDB
/// itself applies each conditional write atomically; the test harness serialises them on moto.
async fn quotas(store: Arc<dyn Store>, concurrent_updates_are_atomic: bool) {
    let exp = wxmp::now_secs() + 86_400;
    for _ in 0..3 {
        assert!(store.take_quota("q", 3, exp).await.unwrap());
    }
    assert!(!store.take_quota("q", 3, exp).await.unwrap());
    assert!(store.take_quota("q-next-day", 3, exp).await.unwrap());

    if !concurrent_updates_are_atomic {
        return;
    }
    // Concurrent takers never pass the limit.
    let mut set = JoinSet::new();
    for _ in 0..25 {
        let store = store.clone();
        set.spawn(async move { store.take_quota("race", 10, exp).await.unwrap() });
    }
    let taken = set.join_all().await.into_iter().filter(|t| *t).count();
    assert_eq!(taken, 10);
}

async fn sessions(store: Arc<dyn Store>) {
    let record = SessionRecord {
        openid: "o1".into(),
        unionid: Some("u1".into()),
        session_key: Secret::new("sk"),
        created_at: 1000,
        expires_at: 2000,
    };
    store.put_session("h1", &record).await.unwrap();
    assert_eq!(
        store.get_session("h1", 1999).await.unwrap(),
        Some(record.clone())
    );
    // Expired on read, whether or not the item is still there.
    assert_eq!(store.get_session("h1", 2000).await.unwrap(), None);
    assert_eq!(store.get_session("nope", 1500).await.unwrap(), None);
    store.delete_session("h1").await.unwrap();
    assert_eq!(store.get_session("h1", 1500).await.unwrap(), None);
    // Deleting a missing session is not an error.
    store.delete_session("h1").await.unwrap();

    // First login of a user, then a returning one.
    assert!(store.record_login("o1", None, 1000).await.unwrap());
    assert!(!store.record_login("o1", Some("u1"), 1100).await.unwrap());
    // Undoing a first login other than the one on record changes nothing.
    store.undo_first_login("o1", 1100).await.unwrap();
    assert!(!store.record_login("o1", None, 1200).await.unwrap());
    // Undoing the one on record makes the next login the first again; undoing for a user never
    // seen is not an error.
    assert!(store.record_login("o2", None, 1300).await.unwrap());
    store.undo_first_login("o2", 1300).await.unwrap();
    assert!(store.record_login("o2", None, 1400).await.unwrap());
    store.undo_first_login("o3", 1300).await.unwrap();
}

async fn claims_and_grants(store: Arc<dyn Store>, concurrent_updates_are_atomic: bool) {
    use wxmp::store::Claim;
    use wxmp::store::{Grant, GrantChange::*, Taken};
    // A claim holds until it expires; only its holder gives it back or renews it.
    assert_eq!(
        store.claim("push#1", "a", 2000, 1000).await.unwrap(),
        Claim::Taken
    );
    assert_eq!(
        store.claim("push#1", "b", 3000, 1999).await.unwrap(),
        Claim::Held { until: 2000 }
    );
    store.release_claim("push#1", "b").await.unwrap();
    assert!(
        !store
            .claim("push#1", "b", 3000, 1999)
            .await
            .unwrap()
            .taken()
    );
    // Its holder renews it (a lease made "done" for longer).
    assert_eq!(
        store.claim("push#1", "a", 90_000, 1500).await.unwrap(),
        Claim::Taken
    );
    assert_eq!(
        store.claim("push#1", "b", 3000, 1999).await.unwrap(),
        Claim::Held { until: 90_000 }
    );
    store.release_claim("push#1", "a").await.unwrap();
    assert!(
        store
            .claim("push#1", "b", 3000, 1999)
            .await
            .unwrap()
            .taken()
    );
    assert!(
        store
            .claim("push#1", "c", 4000, 3000)
            .await
            .unwrap()
            .taken(),
        "expired"
    );
    assert!(
        store
            .claim("push#2", "c", 4000, 3000)
            .await
            .unwrap()
            .taken()
    );

    let g = |t: &str, one_time, long_term| Grant {
        template_id: t.into(),
        one_time,
        long_term,
    };
    assert_eq!(store.grants("o1").await.unwrap(), vec![]);
    assert_eq!(store.take_grant("o1", "T1").await.unwrap(), None);
    store.change_grant("o1", "T1", AddOneTime).await.unwrap();
    store.change_grant("o1", "T1", AddOneTime).await.unwrap();
    store
        .change_grant("o1", "T0", LongTerm(true))
        .await
        .unwrap();
    store.change_grant("o2", "T1", AddOneTime).await.unwrap();
    assert_eq!(
        store.grants("o1").await.unwrap(),
        vec![g("T0", 0, true), g("T1", 2, false)]
    );
    // A standing grant is used without counting down; one-time grants count down to none.
    assert_eq!(
        store.take_grant("o1", "T0").await.unwrap(),
        Some(Taken::LongTerm)
    );
    assert_eq!(
        store.take_grant("o1", "T1").await.unwrap(),
        Some(Taken::OneTime)
    );
    assert_eq!(
        store.take_grant("o1", "T1").await.unwrap(),
        Some(Taken::OneTime)
    );
    assert_eq!(store.take_grant("o1", "T1").await.unwrap(), None);
    assert_eq!(store.grants("o1").await.unwrap(), vec![g("T0", 0, true)]);
    store.change_grant("o1", "T0", AddOneTime).await.unwrap();
    store
        .change_grant("o1", "T0", LongTerm(false))
        .await
        .unwrap();
    store.change_grant("o2", "T1", ClearOneTime).await.unwrap();
    store.change_grant("o2", "T1", ClearOneTime).await.unwrap();
    assert_eq!(store.grants("o1").await.unwrap(), vec![]);
    assert_eq!(store.grants("o2").await.unwrap(), vec![]);
    // A push's changes to several templates, in one write.
    use wxmp::store::NetChange;
    store.change_grant("o3", "T2", AddOneTime).await.unwrap();
    store
        .change_grants(
            "o3",
            &[
                ("T1".into(), NetChange::of([AddOneTime, AddOneTime])),
                ("T2".into(), NetChange::of([ClearOneTime, AddOneTime])),
                ("T3".into(), NetChange::of([LongTerm(true)])),
                ("T4".into(), NetChange::of([AddOneTime, LongTerm(false)])),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        store.grants("o3").await.unwrap(),
        vec![g("T1", 2, false), g("T2", 1, false), g("T3", 0, true)]
    );

    if !concurrent_updates_are_atomic {
        return;
    }
    // Concurrent senders never use more grants than there are.
    for _ in 0..5 {
        store.change_grant("race", "T", AddOneTime).await.unwrap();
    }
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        set.spawn(async move { store.take_grant("race", "T").await.unwrap() });
    }
    let taken = set.join_all().await.into_iter().flatten().count();
    assert_eq!(taken, 5);
    // One claim wins a race.
    let mut set = JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        set.spawn(async move {
            store
                .claim("race", &format!("h{i}"), 10, 1)
                .await
                .unwrap()
                .taken()
        });
    }
    assert_eq!(set.join_all().await.into_iter().filter(|w| *w).count(), 1);
}

async fn suite(store: Arc<dyn Store>, concurrent_updates_are_atomic: bool) {
    leases(store.clone(), concurrent_updates_are_atomic).await;
    tokens(store.clone()).await;
    quotas(store.clone(), concurrent_updates_are_atomic).await;
    claims_and_grants(store.clone(), concurrent_updates_are_atomic).await;
    sessions(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_keeps_the_contract() {
    suite(memory(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_store_keeps_the_contract() {
    suite(dynamo().await, false).await;
}

/// moto checks a condition and writes without a lock; the test store takes turns on conditional
/// writes as DynamoDB applies them atomically (see `e2e::atomic`): the races run there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_ledger_never_passes_its_grants_in_a_race() {
    let sdk = moto::sdk_config(&moto::endpoint().await).await;
    let client = wxmp::aws::dynamodb(&sdk);
    let table = moto::unique_name("race");
    wxmp::store::ensure_table(&client, &table).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(e2e::atomic::AtomicDynamo::new(DynamoStore::new(
        client, table,
    )));
    claims_and_grants(store, true).await;
}
