"""All services, built once over one unit-of-work factory. The app factory and the CLI build this.

The rate-limit service needs the model catalogue (its groups are the catalogue's model families); it
is loaded from the settings, as the gateway's, unless the caller passes the one it already has.
SCIM's service is not here: the app factory builds it for ``/scim/v2``, and only there is its model
library (``scim2_models``, slow to import) needed, not in every CLI command."""

from __future__ import annotations

from dataclasses import dataclass

from orgwarden.config import Settings
from orgwarden.crypto import SecretBox
from orgwarden.data import load_catalog
from orgwarden.domain.catalog import Catalog
from orgwarden.services.admin_keys import AdminKeyService
from orgwarden.services.analytics import AnalyticsService
from orgwarden.services.analytics_activity import ActivityService
from orgwarden.services.api_keys import ApiKeyService
from orgwarden.services.audit_log import AuditLogService
from orgwarden.services.cc_policies import CcPolicyService
from orgwarden.services.claude_code import ClaudeCodeService
from orgwarden.services.invites import InviteService
from orgwarden.services.members import MemberService
from orgwarden.services.organizations import OrganizationService
from orgwarden.services.rate_limits import RateLimitService
from orgwarden.services.rbac_groups import RbacGroupService
from orgwarden.services.reports import ReportService
from orgwarden.services.scim_tokens import ScimTokenService
from orgwarden.services.signin import SignInService
from orgwarden.services.spend_limits import SpendLimitService
from orgwarden.services.tunnel_certificates import TunnelCertificateService
from orgwarden.services.tunnels import TunnelService
from orgwarden.services.user_tokens import UserTokenService
from orgwarden.services.users import UserService
from orgwarden.services.workspaces import WorkspaceService
from orgwarden.storage.uow import UnitOfWorkFactory


@dataclass(frozen=True, slots=True)
class Services:
    organizations: OrganizationService
    users: UserService
    invites: InviteService
    workspaces: WorkspaceService
    members: MemberService
    api_keys: ApiKeyService
    admin_keys: AdminKeyService
    rate_limits: RateLimitService
    spend_limits: SpendLimitService
    reports: ReportService
    analytics: AnalyticsService
    activity: ActivityService
    claude_code: ClaudeCodeService
    tunnels: TunnelService
    tunnel_certificates: TunnelCertificateService
    audit_log: AuditLogService
    scim_tokens: ScimTokenService
    rbac_groups: RbacGroupService
    user_tokens: UserTokenService
    signin: SignInService
    cc_policies: CcPolicyService

    @classmethod
    def build(
        cls, uow: UnitOfWorkFactory, settings: Settings, box: SecretBox, catalog: Catalog | None = None
    ) -> Services:
        catalog = catalog or load_catalog(settings.models_file)
        users = UserService(uow)
        user_tokens = UserTokenService(
            uow,
            settings.access_token_ttl_seconds,
            settings.refresh_token_ttl_seconds,
            max_age_seconds=settings.signin_max_age_seconds,
            box=box,
        )
        return cls(
            organizations=OrganizationService(uow),
            users=users,
            invites=InviteService(uow, ttl_days=settings.invite_ttl_days),
            workspaces=WorkspaceService(uow, box),
            members=MemberService(uow),
            api_keys=ApiKeyService(uow),
            admin_keys=AdminKeyService(uow),
            rate_limits=RateLimitService(uow, catalog),
            spend_limits=SpendLimitService(uow, user_thresholds=settings.user_spend_alert_thresholds),
            reports=ReportService(uow, catalog),
            analytics=AnalyticsService(uow),
            activity=ActivityService(uow),
            claude_code=ClaudeCodeService(uow),
            tunnels=TunnelService(uow, box, settings.tunnel_base_domain),
            tunnel_certificates=TunnelCertificateService(uow),
            audit_log=AuditLogService(uow),
            scim_tokens=ScimTokenService(uow),
            rbac_groups=RbacGroupService(uow),
            user_tokens=user_tokens,
            signin=SignInService(
                uow,
                user_tokens,
                session_ttl_seconds=settings.session_ttl_seconds,
                jit_users=settings.oidc_jit_users,
                allowed_email_domains=settings.oidc_allowed_email_domains,
                device_ttl_seconds=settings.device_code_ttl_seconds,
                device_interval_seconds=settings.device_poll_interval_seconds,
                box=box,
            ),
            cc_policies=CcPolicyService(uow),
        )
