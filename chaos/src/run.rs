//! One chaos run, start to finish: build the network, start the cluster,
//! drive the workloads through the fault schedule, heal, check, tear down,
//! report.

use crate::check;
use crate::history::{checker_history, AckedWrite, Outcome, PeerState, RegisterOp, WatchLog};
use crate::net::{preflight, sweep_abandoned, Network};
use crate::procs::{alive, free_port, Processes, Role};
use crate::report::{Counts, FaultRecord, LeaderSample, Report};
use crate::schedule::{self, Fault, FaultKind, Rng};
use crate::workload::{self, Clock, PREFIX};
use crate::Error;
use berth_proto::etcd::etcdserverpb as pb;
use pb::maintenance_client::MaintenanceClient;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `berth` binary that serves the peers and replicas.
    pub berth: PathBuf,
    /// 3 or 5.
    pub peers: usize,
    pub seed: u64,
    pub faults: usize,
    /// How long each fault holds, drawn from this range (ms).
    pub hold_ms: (u64, u64),
    /// How long the cluster runs healed between faults (ms).
    pub gap_ms: (u64, u64),
    /// Register clients.
    pub clients: u64,
    /// Where the report, histories and logs go.
    pub out: PathBuf,
    /// Time the linearizability checker may take.
    pub check_budget: Duration,
}

/// The schedule `config` draws, as `run` will apply it.
pub fn schedule_of(config: &Config) -> Vec<Fault> {
    schedule::draw(config.seed, config.faults, config.hold_ms, config.gap_ms)
}

/// Runs the whole thing; `interrupted` resolving stops the run early (with
/// everything removed). The report is also written to `config.out`.
pub async fn run(config: Config, interrupted: impl Future<Output = ()>) -> Result<Report, Error> {
    if config.peers != 3 && config.peers != 5 {
        return Err(Error::Harness(format!("--peers must be 3 or 5, not {}", config.peers)));
    }
    preflight()?;
    for removed in sweep_abandoned() {
        println!("removed {removed}, left by an earlier run that was killed");
    }
    let io = |context: &str| {
        let context = context.to_string();
        move |source| Error::Io { context, source }
    };
    std::fs::create_dir_all(config.out.join("logs")).map_err(io("create the output directory"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let run_id =
        format!("{:06x}", (u64::from(std::process::id()) << 8 ^ u64::from(nanos)) & 0xff_ffff);
    let data = tempdir(&run_id)?;
    let (mut report, ops, pids) = {
        let mut harness = Harness::start(&config, &run_id, &data.0).await?;
        let (report, ops) = tokio::select! {
            driven = harness.drive(&config) => driven?,
            () = interrupted => return Err(Error::Interrupted),
        };
        let pids = harness.processes.pids();
        (report, ops, pids)
        // harness (processes, then network) drops here
    };
    drop(data);
    report.left_behind = Network::leftovers(&run_id);
    report.left_behind.extend(pids.iter().filter(|&&p| alive(p)).map(|p| format!("process {p}")));
    report
        .write(&config.out, &ops)
        .map_err(|source| Error::Io { context: "write the report".into(), source })?;
    Ok(report)
}

/// The data directories, removed on drop (and by [`sweep_abandoned`] if
/// the harness was killed).
struct DataDir(PathBuf);

fn tempdir(run_id: &str) -> Result<DataDir, Error> {
    let path = std::env::temp_dir().join(format!("berth-chaos-{run_id}"));
    std::fs::create_dir_all(&path)
        .map_err(|source| Error::Io { context: format!("create {}", path.display()), source })?;
    Ok(DataDir(path))
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything live during a run. Field order is drop order: processes go
/// before the namespaces they run in.
struct Harness {
    processes: Processes,
    network: Network,
    addresses: Vec<String>,
    channels: Vec<Channel>,
    clock: Clock,
    run_id: String,
    pki: Pki,
}

/// The run's cluster CA and the files of the certificates it issued:
/// peers talk mutual TLS, as a real multi-machine cluster must.
struct Pki {
    dir: std::path::PathBuf,
    /// The harness's own credential (an administrator's, which the etcd
    /// API takes).
    admin: berth_tls::ClientTls,
}

impl Pki {
    fn create(dir: &std::path::Path, run_id: &str) -> Result<(Pki, berth_tls::ClusterCa), Error> {
        let tls = |e: berth_tls::TlsError| Error::Harness(format!("cluster certificates: {e}"));
        let ca =
            berth_tls::ClusterCa::load_or_create(dir, &format!("chaos-{run_id}")).map_err(tls)?;
        let admin = ca
            .issue(&berth_tls::Subject {
                common_name: "chaos-harness".into(),
                organizations: vec!["system:masters".into()],
                ..Default::default()
            })
            .map_err(tls)?;
        admin.save(&dir.join("admin.crt"), &dir.join("admin.key")).map_err(tls)?;
        let trust = berth_tls::Trust::from_pem(ca.cert_pem()).map_err(tls)?;
        let admin = berth_tls::ClientTls::new(trust, Some(admin));
        Ok((Pki { dir: dir.to_path_buf(), admin }, ca))
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A control loop's flags: the CA, and the administrator's certificate.
    fn client_flags(&self) -> Vec<String> {
        vec![
            "--certificate-authority".into(),
            self.file(berth_tls::CA_CERT_FILE),
            "--client-certificate".into(),
            self.file("admin.crt"),
            "--client-key".into(),
            self.file("admin.key"),
        ]
    }
}

impl Harness {
    async fn start(
        config: &Config,
        run_id: &str,
        data: &std::path::Path,
    ) -> Result<Harness, Error> {
        let network = Network::create(run_id, config.peers)?;
        let (pki, ca) = Pki::create(&data.join("pki"), run_id)?;
        let mut processes = Processes::new(&config.berth, &config.out.join("logs"));
        let addresses: Vec<String> =
            (0..config.peers).map(|p| format!("{}:2379", network.peer_ip(p))).collect();
        let members: Vec<String> =
            addresses.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        for (peer, address) in addresses.iter().enumerate() {
            let args = vec![
                "server".into(),
                "--id".into(),
                (peer + 1).to_string(),
                "--cluster".into(),
                format!("chaos-{run_id}"),
                "--peers".into(),
                members.join(","),
                "--listen".into(),
                address.clone(),
                "--http".into(),
                format!("{}:8080", network.peer_ip(peer)),
                "--data-dir".into(),
                data.join(format!("peer-{}", peer + 1)).to_string_lossy().into_owned(),
                "--tls-cert-file".into(),
                pki.file(&format!("peer-{}.crt", peer + 1)),
                "--tls-private-key-file".into(),
                pki.file(&format!("peer-{}.key", peer + 1)),
                "--client-ca-file".into(),
                pki.file(berth_tls::CA_CERT_FILE),
            ];
            let host = network.peer_ip(peer).to_string();
            let subject = berth_tls::peer_subject(peer as u64 + 1, vec![host]);
            ca.issue(&subject)
                .and_then(|c| {
                    c.save(
                        &data.join("pki").join(format!("peer-{}.crt", peer + 1)),
                        &data.join("pki").join(format!("peer-{}.key", peer + 1)),
                    )
                })
                .map_err(|e| Error::Harness(format!("peer certificate: {e}")))?;
            processes.add(
                &format!("peer-{}", peer + 1),
                Role::Peer,
                Some(network.namespace(peer)),
                args,
                None,
            )?;
        }
        let channels = addresses
            .iter()
            .map(|a| workload::channel(a, &pki.admin))
            .collect::<Result<Vec<_>, _>>()?;
        let harness = Harness {
            processes,
            network,
            addresses,
            channels,
            clock: Clock(Instant::now()),
            run_id: run_id.into(),
            pki,
        };
        Ok(harness)
    }

    fn client(&self) -> Result<berth_client::Client, Error> {
        let mut config = berth_client::Config::new(self.addresses.clone());
        config.request_timeout = Duration::from_secs(2);
        config.connect_timeout = Duration::from_millis(500);
        config.retry_for = Duration::from_secs(5);
        config.tls = Some(self.pki.admin.clone());
        berth_client::Client::with_config(config).map_err(|e| Error::Harness(e.to_string()))
    }

    fn ms(&self) -> f64 {
        self.clock.now() as f64 / 1e6
    }

    async fn start_control_plane(&mut self) -> Result<(), Error> {
        let servers = self.addresses.join(",");
        for (role, command, count) in
            [(Role::Scheduler, "scheduler", 2), (Role::ControllerManager, "controller-manager", 2)]
        {
            for i in 1..=count {
                let port = free_port()?;
                let name = format!("{command}-{i}");
                let args = vec![
                    command.into(),
                    "--server".into(),
                    servers.clone(),
                    "--id".into(),
                    format!("chaos-{}-{name}", self.run_id),
                    "--http".into(),
                    format!("127.0.0.1:{port}"),
                ];
                let args = [args, self.pki.client_flags()].concat();
                self.processes.add(&name, role, None, args, Some(port))?;
            }
        }
        for role in [Role::Scheduler, Role::ControllerManager] {
            self.active(role, Duration::from_secs(30)).await?;
        }
        Ok(())
    }

    /// The replica of `role` whose /leaderz says it leads, waiting for one.
    async fn active(&self, role: Role, within: Duration) -> Result<usize, Error> {
        let deadline = Instant::now() + within;
        loop {
            for index in self.processes.of(role) {
                if !self.processes.is_running(index) {
                    continue;
                }
                if let Some(port) = self.processes.http_port(index) {
                    if leaderz(port).await {
                        return Ok(index);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Harness(format!("no {role:?} replica led within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Raft leader (0-based), as the peers with the highest term say.
    async fn leader(&self, within: Duration) -> Result<usize, Error> {
        let deadline = Instant::now() + within;
        loop {
            let (_, leader) = status_round(&self.channels).await;
            if let Some(leader) = leader {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(Error::Harness(format!("no peer led within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let client = self.client()?;
        let namespaces = berth_client::Api::<berth_proto::core_v1::Namespace>::all(&client);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if namespaces.list(&Default::default()).await.is_ok_and(|l| l.items.len() >= 3) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Harness("the cluster never became ready (see logs/)".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn drive(&mut self, config: &Config) -> Result<(Report, Vec<RegisterOp>), Error> {
        let schedule = schedule_of(config);
        println!("run {} seed {}: {} faults", self.run_id, config.seed, schedule.len());
        for fault in &schedule {
            println!("  {fault}");
        }
        self.wait_ready().await?;
        self.start_control_plane().await?;
        println!("cluster up: peers {:?}", self.addresses);

        // Workloads.
        let stop_writers = CancellationToken::new();
        let stop_watchers = CancellationToken::new();
        let start = current_revision(&self.channels).await? + 1;
        let keys: Vec<String> = (0..3).map(|k| format!("{PREFIX}reg/k{k}")).collect();
        let registers: Vec<_> = (0..config.clients)
            .map(|c| {
                tokio::spawn(workload::registers(
                    c + 1,
                    config.seed,
                    self.channels.clone(),
                    keys.clone(),
                    self.clock,
                    stop_writers.clone(),
                ))
            })
            .collect();
        let _abort_registers = AbortAll(registers.iter().map(|h| h.abort_handle()).collect());
        let pair = [format!("{PREFIX}pair/a"), format!("{PREFIX}pair/b")];
        let pairs =
            tokio::spawn(workload::pairs(self.channels.clone(), pair, stop_writers.clone()));
        let _abort_pairs = AbortAll(vec![pairs.abort_handle()]);
        let objects: Vec<String> = (0..2).map(|i| format!("chaos-obj-{i}")).collect();
        let api: Vec<_> = (1..=2)
            .map(|writer| {
                Ok(tokio::spawn(workload::api_objects(
                    writer,
                    self.client()?,
                    objects.clone(),
                    self.clock,
                    stop_writers.clone(),
                )))
            })
            .collect::<Result<_, Error>>()?;
        let _abort_api = AbortAll(api.iter().map(|h| h.abort_handle()).collect());
        let logs: Vec<Arc<Mutex<WatchLog>>> =
            (0..config.peers).map(|_| Arc::new(Mutex::new(WatchLog::default()))).collect();
        let watchers: Vec<_> = (0..config.peers)
            .map(|p| {
                tokio::spawn(workload::watcher(
                    p,
                    self.channels[p].clone(),
                    start,
                    logs[p].clone(),
                    stop_watchers.clone(),
                ))
            })
            .collect();
        let _abort_watchers = AbortAll(watchers.iter().map(|h| h.abort_handle()).collect());
        let candidates: Vec<workload::Candidate> = (0..2)
            .map(|i| Ok(workload::candidate(i, self.client()?, self.clock, stop_writers.clone())))
            .collect::<Result<_, Error>>()?;
        let _abort_candidates =
            AbortAll(candidates.iter().map(|c| c.task.abort_handle()).collect());
        let leaders = Arc::new(Mutex::new(Vec::<LeaderSample>::new()));
        let poller = tokio::spawn(poll_leaders(
            self.channels.clone(),
            self.clock,
            leaders.clone(),
            stop_watchers.clone(),
        ));
        let _abort_poller = AbortAll(vec![poller.abort_handle()]);

        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut records = Vec::new();
        for fault in &schedule {
            let record = self.apply(fault, &candidates).await?;
            println!(
                "  #{} {} on {}: healed after {:.0} ms",
                fault.index,
                fault.kind.name(),
                record.target,
                record.healed_ms.unwrap_or(0.0) - record.started_ms
            );
            records.push(record);
            let dead = self.processes.exited();
            if !dead.is_empty() {
                return Err(Error::Harness(dead.join("; ")));
            }
            tokio::time::sleep(Duration::from_millis(fault.gap_ms)).await;
        }
        self.network.heal()?;
        self.processes.heal()?;
        for c in &candidates {
            c.freezer.thaw();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Stop every writer: the workloads, then the control plane (its
        // Lease renewals would keep the key space moving).
        stop_writers.cancel();
        let mut ops: Vec<RegisterOp> = Vec::new();
        for handle in registers {
            ops.extend(handle.await.map_err(|e| Error::Harness(format!("register client: {e}")))?);
        }
        let acked_pairs =
            pairs.await.map_err(|e| Error::Harness(format!("transaction writer: {e}")))?;
        let mut api_writes = Vec::new();
        for handle in api {
            api_writes
                .extend(handle.await.map_err(|e| Error::Harness(format!("API writer: {e}")))?);
        }
        let mut fenced = Vec::new();
        for c in candidates {
            fenced.extend(c.task.await.map_err(|e| Error::Harness(format!("fenced writer: {e}")))?);
        }
        self.processes.kill_role(Role::Scheduler);
        self.processes.kill_role(Role::ControllerManager);

        let mut violations = Vec::new();
        let mut inconclusive = Vec::new();
        let states = converge(&self.channels, Duration::from_secs(30)).await;
        violations.extend(check::convergence(&states));
        let through = states.iter().filter_map(|s| s.revision).max().unwrap_or(start);
        let store = match workload::store_history(
            &self.channels[0],
            start,
            through,
            Duration::from_secs(30),
        )
        .await
        {
            Ok(store) => store,
            Err(e) => return Err(Error::Harness(e)),
        };
        // Watchers catch up with the store, or the check names the one that did not.
        let last = store.iter().filter(|e| e.key.starts_with(PREFIX)).map(|e| e.revision).max();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let behind = logs.iter().any(|l| {
                let l = l.lock().unwrap_or_else(|e| e.into_inner());
                l.events.last().map(|e| e.revision) < last
            });
            if !behind {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_watchers.cancel();
        for handle in watchers {
            let _ = handle.await;
        }
        let _ = poller.await;
        let logs: Vec<WatchLog> =
            logs.iter().map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();

        match check::linearizability(&checker_history(&ops), config.check_budget) {
            Ok(found) => violations.extend(found),
            Err(reason) => inconclusive.push(format!("linearizability: {reason}")),
        }
        let mut acked = workload::acked_register_writes(&ops);
        acked.extend(acked_pairs);
        acked.extend(api_writes.iter().filter(|w| w.outcome == Outcome::Ok).filter_map(|w| {
            Some(AckedWrite { key: workload::object_key(&w.object), revision: w.to?, value: None })
        }));
        violations.extend(check::lost_writes(&acked, &store));
        violations.extend(check::watches(&logs, &store, PREFIX));
        violations.extend(check::fencing(&fenced));
        violations.extend(check::preconditions(&api_writes));

        // Figures.
        for record in &mut records {
            let at = (record.started_ms * 1e6) as u64;
            record.unavailability_ms = ops
                .iter()
                .filter(|op| op.is_write() && op.outcome == Outcome::Ok && op.call >= at)
                .filter_map(|op| op.ret)
                .min()
                .map(|ret| (ret - at) as f64 / 1e6);
        }
        let leaders = leaders.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut terms: Vec<u64> =
            leaders.iter().filter(|s| s.leader.is_some()).map(|s| s.term).collect();
        terms.dedup();
        terms.sort_unstable();
        terms.dedup();
        let count = |outcome| ops.iter().filter(|o| o.outcome == outcome).count();
        let api_count = |outcome| api_writes.iter().filter(|w| w.outcome == outcome).count();
        let fenced_count = |outcome| fenced.iter().filter(|w| w.outcome == outcome).count();
        let counts = Counts {
            register_ok: count(Outcome::Ok),
            register_fail: count(Outcome::Fail),
            register_unknown: count(Outcome::Unknown),
            api_writes_ok: api_count(Outcome::Ok),
            api_writes_refused: api_count(Outcome::Fail),
            api_writes_unknown: api_count(Outcome::Unknown),
            fenced_writes_accepted: fenced_count(Outcome::Ok),
            fenced_writes_refused: fenced_count(Outcome::Fail),
            fenced_writes_unknown: fenced_count(Outcome::Unknown),
            watch_events: logs.iter().map(|l| l.events.len()).collect(),
            watch_resumes: logs.iter().map(|l| l.resumes).collect(),
            store_events: store.len(),
        };
        if counts.register_ok == 0
            || counts.fenced_writes_accepted == 0
            || counts.api_writes_ok == 0
        {
            violations.push(check::Violation {
                checker: "progress".into(),
                message: format!("a workload never succeeded: {counts:?}"),
            });
        }
        let all_healed = records.iter().all(|r| r.healed_ms.is_some());
        let report = Report {
            run_id: self.run_id.clone(),
            seed: config.seed,
            peers: config.peers,
            clients: format!(
                "host namespace, through veth {} (10.213.x.1) into the bridge namespace",
                self.network.names().last().cloned().unwrap_or_default()
            ),
            duration_ms: self.ms(),
            faults: records,
            all_healed,
            leader_elections: terms.len().saturating_sub(1) as u64,
            leaders,
            counts,
            violations,
            inconclusive,
            left_behind: Vec::new(),
        };
        let history = serde_json::json!({
            "registers": ops, "api_writes": api_writes, "fenced_writes": fenced,
            "watches": logs, "store": store, "final_states": states,
        });
        let write = |name: &str, bytes: Vec<u8>| {
            std::fs::write(config.out.join(name), bytes)
                .map_err(|source| Error::Io { context: format!("write {name}"), source })
        };
        write("history.json", serde_json::to_vec(&history).unwrap_or_default())?;
        Ok((report, ops))
    }

    /// Applies one fault, holds it, heals it.
    async fn apply(
        &mut self,
        fault: &Fault,
        candidates: &[workload::Candidate],
    ) -> Result<FaultRecord, Error> {
        let n = self.addresses.len();
        let mut rng = Rng::new(fault.pick);
        let hold = Duration::from_millis(fault.hold_ms);
        let mut takeover_ms = None;
        let peer_name = |p: usize| format!("peer-{}", p + 1);
        let started_ms;
        let (target, how) = match fault.kind {
            FaultKind::IsolateLeader => {
                let leader = self.leader(Duration::from_secs(20)).await?;
                let others: Vec<usize> = (0..n).filter(|&p| p != leader).collect();
                self.network.block(leader, &others, false)?;
                started_ms = self.ms();
                (peer_name(leader), "nftables drop to and from every other peer".to_string())
            }
            FaultKind::SplitMajorityMinority | FaultKind::BridgePartition => {
                let mut order: Vec<usize> = (0..n).collect();
                rng.shuffle(&mut order);
                let (a, b, bridge) = if fault.kind == FaultKind::SplitMajorityMinority {
                    (order[..n / 2].to_vec(), order[n / 2..].to_vec(), None)
                } else {
                    let rest = &order[1..];
                    (
                        rest[..rest.len() / 2].to_vec(),
                        rest[rest.len() / 2..].to_vec(),
                        Some(order[0]),
                    )
                };
                for &p in &a {
                    self.network.block(p, &b, false)?;
                }
                for &p in &b {
                    self.network.block(p, &a, false)?;
                }
                started_ms = self.ms();
                let ids = |s: &[usize]| s.iter().map(|p| p + 1).collect::<Vec<_>>();
                let target = match bridge {
                    Some(m) => format!("{:?} | {:?}, bridge {}", ids(&a), ids(&b), m + 1),
                    None => format!("{:?} | {:?}", ids(&a), ids(&b)),
                };
                (target, "nftables drop between the sides".to_string())
            }
            FaultKind::OneWayLoss => {
                let from = self.leader(Duration::from_secs(20)).await?;
                let to = (from + 1 + rng.below(n as u64 - 1) as usize) % n;
                self.network.block(from, &[to], true)?;
                started_ms = self.ms();
                (format!("peer-{} -> peer-{}", from + 1, to + 1), "nftables output drop".into())
            }
            FaultKind::KillPeer => {
                let victim = rng.below(n as u64) as usize;
                self.processes.kill(victim);
                started_ms = self.ms();
                (peer_name(victim), "SIGKILL, restart on heal".into())
            }
            FaultKind::KillLeader => {
                let leader = self.leader(Duration::from_secs(20)).await?;
                self.processes.kill(leader);
                started_ms = self.ms();
                (peer_name(leader), "SIGKILL, restart on heal".into())
            }
            FaultKind::PauseLeader => {
                let leader = self.leader(Duration::from_secs(20)).await?;
                self.processes.pause(leader, true)?;
                started_ms = self.ms();
                (peer_name(leader), "SIGSTOP, SIGCONT on heal".into())
            }
            FaultKind::KillScheduler | FaultKind::KillControllerManager => {
                let role = if fault.kind == FaultKind::KillScheduler {
                    Role::Scheduler
                } else {
                    Role::ControllerManager
                };
                let active = self.active(role, Duration::from_secs(20)).await?;
                let name = self.processes.name(active).to_string();
                self.processes.kill(active);
                let killed = Instant::now();
                started_ms = self.ms();
                self.active(role, Duration::from_secs(20)).await?;
                takeover_ms = Some(killed.elapsed().as_secs_f64() * 1000.0);
                (name, "SIGKILL of the Lease holder, restart on heal".into())
            }
            FaultKind::DelayAndLoss => {
                let victim = rng.below(n as u64) as usize;
                let how = self.network.degrade(victim, 100, 10)?;
                started_ms = self.ms();
                (peer_name(victim), how)
            }
            FaultKind::PauseFencedWriter => {
                let leading = candidates.iter().position(|c| c.leading.borrow().is_some());
                let victim = leading.unwrap_or(0);
                let freezer = &candidates[victim].freezer;
                freezer.freeze_before_next_write();
                let deadline = Instant::now() + Duration::from_secs(5);
                while !freezer.is_frozen() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                freezer.freeze();
                let frozen = Instant::now();
                started_ms = self.ms();
                // Frozen until the other candidate leads, so the woken one's
                // write with its old token is exactly what fencing must refuse.
                let successor = &candidates[1 - victim.min(1)].leading;
                let deadline = Instant::now() + Duration::from_secs(20);
                while successor.borrow().is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if successor.borrow().is_some() {
                    takeover_ms = Some(frozen.elapsed().as_secs_f64() * 1000.0);
                }
                (
                    format!("writer candidate {victim}"),
                    "frozen holding its token until the other candidate led".into(),
                )
            }
        };
        let elapsed = Duration::from_secs_f64((self.ms() - started_ms).max(0.0) / 1000.0);
        tokio::time::sleep(hold.saturating_sub(elapsed)).await;
        self.network.heal()?;
        self.processes.heal()?;
        for c in candidates {
            c.freezer.thaw();
        }
        Ok(FaultRecord {
            fault: fault.clone(),
            target,
            how,
            started_ms,
            healed_ms: Some(self.ms()),
            unavailability_ms: None,
            takeover_ms,
        })
    }
}

/// Aborts tasks when dropped, so an early return leaves none running.
struct AbortAll(Vec<tokio::task::AbortHandle>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

async fn status(channel: &Channel) -> Option<pb::StatusResponse> {
    let mut client = MaintenanceClient::new(channel.clone());
    let call = client.status(pb::StatusRequest {});
    tokio::time::timeout(Duration::from_millis(300), call).await.ok()?.ok().map(|r| r.into_inner())
}

/// One round of Status calls: the leader (0-based) if one is sure, with
/// its term, else the highest term seen and None. Sure: a majority of the peers name it at its term,
/// itself among them. A single peer's view may be a term behind (it has not
/// heard of the election yet), and a fault aimed by it would hit a
/// follower; an isolated peer's higher term (it campaigns alone) does not
/// hide the leader the majority follows. Two majorities share a peer, and a
/// peer names one leader, so at most one leader is sure.
async fn status_round(channels: &[Channel]) -> (u64, Option<usize>) {
    let answers = futures::future::join_all(channels.iter().map(status)).await;
    let views: Vec<Option<(u64, u64)>> =
        answers.iter().map(|a| a.as_ref().map(|s| (s.raft_term, s.leader))).collect();
    agreed_leader(&views)
}

/// From each peer's (term, leader id) as it answered; see [`status_round`].
fn agreed_leader(views: &[Option<(u64, u64)>]) -> (u64, Option<usize>) {
    let sure = views.iter().enumerate().find_map(|(index, view)| {
        let (term, named) = (*view)?;
        let naming = views.iter().flatten().filter(|v| **v == (term, named)).count();
        (named == index as u64 + 1 && naming > views.len() / 2).then_some((term, index))
    });
    match sure {
        Some((term, index)) => (term, Some(index)),
        None => (views.iter().flatten().map(|(term, _)| *term).max().unwrap_or(0), None),
    }
}

async fn poll_leaders(
    channels: Vec<Channel>,
    clock: Clock,
    samples: Arc<Mutex<Vec<LeaderSample>>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let (term, leader) = status_round(&channels).await;
        let sample = LeaderSample {
            at_ms: clock.now() as f64 / 1e6,
            leader: leader.map(|l| l as u64 + 1),
            term,
        };
        samples.lock().unwrap_or_else(|e| e.into_inner()).push(sample);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

async fn current_revision(channels: &[Channel]) -> Result<i64, Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for channel in channels {
            if let Some(s) = status(channel).await {
                if let Some(h) = s.header {
                    return Ok(h.revision);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Harness("no peer reported its revision".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn hash_kv(channel: &Channel) -> Option<(i64, u32)> {
    let mut client = MaintenanceClient::new(channel.clone());
    let call = client.hash_kv(pb::HashKvRequest { revision: 0 });
    let r = tokio::time::timeout(Duration::from_secs(1), call).await.ok()?.ok()?.into_inner();
    Some((r.header?.revision, r.hash))
}

/// Polls every peer until all report the same revision and key-space hash;
/// returns the last round either way.
async fn converge(channels: &[Channel], within: Duration) -> Vec<PeerState> {
    let deadline = Instant::now() + within;
    loop {
        let answers = futures::future::join_all(channels.iter().map(hash_kv)).await;
        let states: Vec<PeerState> = answers
            .iter()
            .enumerate()
            .map(|(peer, a)| PeerState { peer, revision: a.map(|a| a.0), hash: a.map(|a| a.1) })
            .collect();
        if check::convergence(&states).is_empty() || Instant::now() > deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the replica serving /leaderz on this loopback port leads.
async fn leaderz(port: u16) -> bool {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream
            .write_all(b"GET /leaderz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 16];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_millis(500), ask).await.ok().flatten().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::agreed_leader;

    #[test]
    fn a_leader_counts_when_a_majority_names_it_at_the_highest_term_itself_included() {
        // All agree.
        assert_eq!(agreed_leader(&[Some((3, 2)), Some((3, 2)), Some((3, 2))]), (3, Some(1)));
        // One peer silent: the other two still make a majority of three.
        assert_eq!(agreed_leader(&[None, Some((3, 2)), Some((3, 2))]), (3, Some(1)));
        // A peer a term behind names the old leader: not enough on its own.
        assert_eq!(agreed_leader(&[Some((3, 1)), Some((4, 2)), Some((4, 0))]), (4, None));
        // Two name peer 1 but peer 1 has moved on to a higher term.
        assert_eq!(agreed_leader(&[Some((5, 0)), Some((4, 1)), Some((4, 1))]), (5, None));
        // An isolated peer campaigning alone at term 9 does not hide the
        // leader the other two follow.
        assert_eq!(agreed_leader(&[Some((4, 2)), Some((4, 2)), Some((9, 0))]), (4, Some(1)));
        // A majority names peer 3, but peer 3 does not answer.
        assert_eq!(agreed_leader(&[Some((2, 3)), Some((2, 3)), None]), (2, None));
        // A leader id past the peers known is never chosen.
        assert_eq!(agreed_leader(&[Some((2, 9)), Some((2, 9)), Some((2, 9))]), (2, None));
        assert_eq!(agreed_leader(&[]), (0, None));
    }
}
