"""When an owner loses power, the JWTs minted from their tokens lose it at once too.

API tokens need nothing here: every request reads the owner's row and asks the grant
policy again (a deactivated owner's tokens fail, a demoted owner's tokens lose their
staff-only scopes). JWTs are verified without SQL, so their scopes were fixed when they
were minted; when an owner is deactivated, demoted (staff, superuser), loses a
permission or a group, or is deleted, every JWT of that owner minted until now is
refused through the deny list, and clients mint new ones carrying what is allowed now.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import signals

from tokens_app.core import clock
from tokens_app.jwt import denylist

#: The user fields the grant policy reads (see ``tokens_app.core.scopes.may_hold``).
POWER_FIELDS = ("is_active", "is_staff", "is_superuser")


def owner_lost_power(owner_pk: Any) -> None:
    """Refuse every JWT of the owner *owner_pk* minted until now."""
    denylist.refuse_owner_minted_until(owner_pk, clock.now())


def _power(user: Any) -> dict[str, bool]:
    return {name: bool(getattr(user, name, True)) for name in POWER_FIELDS if hasattr(user, name)}


def _before_user_save(sender: Any, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if instance.pk is None or kwargs.get("raw"):
        return
    if update_fields is not None and not set(update_fields) & set(POWER_FIELDS):
        return  # a login's last_login stamp, say: nothing to compare
    fields = [name for name in POWER_FIELDS if hasattr(instance, name)]
    stored = sender._default_manager.filter(pk=instance.pk).values(*fields).first()
    if stored is None:
        return
    now = _power(instance)
    if any(stored[name] and not now[name] for name in fields):
        owner_lost_power(instance.pk)


def _before_user_delete(sender: Any, instance: Any, **kwargs: Any) -> None:
    owner_lost_power(instance.pk)


def _refuse_all(users: Any) -> None:
    for owner_pk in users.values_list("pk", flat=True):
        owner_lost_power(owner_pk)


def _user_relation_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """A user lost permissions or groups (from either side of the relation)."""
    users = get_user_model()._default_manager
    if not reverse:  # user.user_permissions.remove(...), user.groups.clear()
        if action in ("post_remove", "post_clear"):
            owner_lost_power(instance.pk)
    elif action == "post_remove" and pk_set:  # permission.user_set.remove(user)
        _refuse_all(users.filter(pk__in=pk_set))
    elif action == "pre_clear":  # permission.user_set.clear(): after it, nobody knows whom
        _refuse_all(users.filter(**{_relation_name(sender): instance}))


def _relation_name(through: Any) -> str:
    user_model = get_user_model()
    for name in ("user_permissions", "groups"):
        if getattr(getattr(user_model, name, None), "through", None) is through:
            return name
    raise LookupError(through)


def _group_permissions_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """A group lost permissions: every member lost them."""
    users = get_user_model()._default_manager
    if not reverse:  # group.permissions.remove(...)
        if action in ("post_remove", "post_clear"):
            _refuse_all(users.filter(groups=instance))
    elif action == "post_remove" and pk_set:  # permission.group_set.remove(group)
        _refuse_all(users.filter(groups__pk__in=pk_set).distinct())
    elif action == "pre_clear":  # permission.group_set.clear()
        _refuse_all(users.filter(groups__permissions=instance).distinct())


def connect() -> None:
    """Wire the receivers to the configured user model (called from ``AppConfig.ready``)."""
    user_model = get_user_model()
    signals.pre_save.connect(_before_user_save, sender=user_model, dispatch_uid="tokens_app.power")
    signals.pre_delete.connect(
        _before_user_delete, sender=user_model, dispatch_uid="tokens_app.power-delete"
    )
    for relation in ("user_permissions", "groups"):
        field = getattr(user_model, relation, None)
        if field is not None and hasattr(field, "through"):
            signals.m2m_changed.connect(
                _user_relation_changed,
                sender=field.through,
                dispatch_uid=f"tokens_app.power-{relation}",
            )
    signals.m2m_changed.connect(
        _group_permissions_changed,
        sender=Group.permissions.through,
        dispatch_uid="tokens_app.power-group-permissions",
    )
