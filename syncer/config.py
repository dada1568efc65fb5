"""The frozen run configuration built by the CLI and checked once. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from syncer.deadline import DEFAULT_CYCLE_TIMEOUT
from syncer.errors import ConfigError
from syncer.run.leader import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, check_timing

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Config:
    output_dir: str
    renderer: str = "traefik"
    renderer_options: dict[str, dict[str, str]] = field(default_factory=dict)
    source_dir: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespaces: tuple[str, ...] = ()
    ingress_class: str = "syncer"
    controller_name: str = "ingress-syncer.dev/controller"
    watch_ingress_without_class: bool = False
    upstream: str = "endpoints"
    allow_external_name: bool = False
    publish_addresses: tuple[str, ...] = ()
    publish_service: str | None = None
    max_removal_ratio: float = 0.5
    removal_confirmations: int = 3
    allow_mass_removal: bool = False
    dry_run: bool = False
    leader_elect: bool = False
    leader_elect_namespace: str = "default"
    leader_elect_name: str = "ingress-syncer"
    leader_elect_lease_duration: float = LEASE_DURATION
    leader_elect_renew_deadline: float = RENEW_DEADLINE
    leader_elect_retry_period: float = RETRY_PERIOD
    interval: float = 10.0
    cycle_timeout: float = DEFAULT_CYCLE_TIMEOUT
    secret_file_group: int | None = None  # a group id; resolved from a name by the command line
    log_level: str = "info"
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ConfigError("--output-dir is required (or SYNCER_OUTPUT_DIR)")
        if self.interval <= 0:
            raise ConfigError(f"--interval must be positive, not {self.interval}")
        if self.secret_file_group is not None and self.secret_file_group < 0:
            raise ConfigError(f"--secret-file-group must be a group id or name, not {self.secret_file_group}")
        if not self.cycle_timeout > 0:  # also NaN
            raise ConfigError(f"--cycle-timeout must be positive, not {self.cycle_timeout}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        if self.source_dir and (self.kubeconfig or self.context):
            raise ConfigError("--source reads manifests; it cannot be combined with --kubeconfig or --context")
        if self.source_dir and (self.publish_addresses or self.publish_service):
            raise ConfigError(
                "--publish-address and --publish-service write Ingress status through the API; not with --source"
            )
        if self.leader_elect:
            self._check_leader_election()
        unknown = sorted(set(self.renderer_options) - {self.renderer})
        if unknown:
            raise ConfigError(
                f"--renderer-opt {unknown[0]}.* is for renderer {unknown[0]!r}, but --renderer is {self.renderer!r}"
            )

    def _check_leader_election(self) -> None:
        if self.source_dir:
            raise ConfigError("--leader-elect elects a leader through a Lease in the API; not with --source")
        if self.leader_elect and self.dry_run:
            raise ConfigError("--dry-run writes nothing, so it has nothing to lead: drop --leader-elect")
        if not self.leader_elect_namespace or not self.leader_elect_name:
            raise ConfigError("--leader-elect-namespace and --leader-elect-name must not be empty")
        try:
            check_timing(
                self.leader_elect_lease_duration, self.leader_elect_renew_deadline, self.leader_elect_retry_period
            )
        except ValueError as exc:
            raise ConfigError(
                f"--leader-elect-lease-duration, --leader-elect-renew-deadline, --leader-elect-retry-period: {exc}"
            ) from None
