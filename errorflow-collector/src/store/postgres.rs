//! postgres backend (stub; filled in by the storage work).
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Backend, Result, Store};
use crate::model::*;

pub struct PgStore {
    pub pool: sqlx::PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(PgStore { pool: sqlx::PgPool::connect(url).await? })
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend { unimplemented!() }
    async fn migrate(&self) -> Result<()> { unimplemented!() }
    async fn ping(&self) -> Result<()> { unimplemented!() }
    async fn create_project(&self, _name: &str, _key_hash: &str, _key_prefix: &str) -> Result<Project> { unimplemented!() }
    async fn list_projects(&self) -> Result<Vec<Project>> { unimplemented!() }
    async fn get_project(&self, _id: i64) -> Result<Option<Project>> { unimplemented!() }
    async fn project_by_key_hash(&self, _key_hash: &str) -> Result<Option<Project>> { unimplemented!() }
    async fn rotate_project_key(&self, _id: i64, _key_hash: &str, _key_prefix: &str) -> Result<bool> { unimplemented!() }
    async fn create_token(&self, _name: &str, _token_hash: &str) -> Result<ApiToken> { unimplemented!() }
    async fn token_by_hash(&self, _token_hash: &str) -> Result<Option<ApiToken>> { unimplemented!() }
    async fn insert_events(&self, _events: &[NormalizedEvent]) -> Result<Vec<InsertOutcome>> { unimplemented!() }
    async fn list_groups(&self, _query: &GroupQuery) -> Result<GroupPage> { unimplemented!() }
    async fn get_group(&self, _id: i64) -> Result<Option<Group>> { unimplemented!() }
    async fn group_by_cluster_key(&self, _cluster_key: &str) -> Result<Option<Group>> { unimplemented!() }
    async fn group_stats(&self, _id: i64, _now: DateTime<Utc>) -> Result<GroupStats> { unimplemented!() }
    async fn transition(&self, _id: i64, _transition: &Transition, _actor: &str, _now: DateTime<Utc>) -> Result<Option<Group>> { unimplemented!() }
    async fn quiet_idle(&self, _idle_since: DateTime<Utc>, _now: DateTime<Utc>) -> Result<u64> { unimplemented!() }
    async fn activity(&self, _group_id: i64) -> Result<Vec<Activity>> { unimplemented!() }
    async fn list_events(&self, _query: &EventQuery) -> Result<EventPage> { unimplemented!() }
    async fn get_event(&self, _event_id: Uuid) -> Result<Option<StoredEvent>> { unimplemented!() }
    async fn count_groups(&self, _query: &GroupQuery) -> Result<GroupCounts> { unimplemented!() }
    async fn hourly_counts(&self, _ids: &[i64], _now: DateTime<Utc>) -> Result<std::collections::HashMap<i64, Vec<i64>>> { unimplemented!() }
    async fn event_neighbors(&self, _group_id: i64, _timestamp: DateTime<Utc>, _id: i64) -> Result<EventNeighbors> { unimplemented!() }
    async fn create_user(&self, _name: &str, _password_hash: &str) -> Result<Option<User>> { unimplemented!() }
    async fn user_by_name(&self, _name: &str) -> Result<Option<User>> { unimplemented!() }
    async fn set_user_password(&self, _name: &str, _password_hash: &str) -> Result<bool> { unimplemented!() }
    async fn count_users(&self) -> Result<i64> { unimplemented!() }
    async fn create_session(&self, _token_hash: &str, _user_id: i64, _now: DateTime<Utc>, _expires_at: DateTime<Utc>) -> Result<()> { unimplemented!() }
    async fn session_by_hash(&self, _token_hash: &str, _now: DateTime<Utc>) -> Result<Option<Session>> { unimplemented!() }
    async fn delete_session(&self, _token_hash: &str) -> Result<()> { unimplemented!() }
}
