"""APScheduler's textual references ("package.module:some.object") and its
`undefined` sentinel, with apscheduler.util's behaviour (no dependency on
APScheduler itself)."""
import functools
import importlib
import inspect


class _Undefined:
    def __bool__(self):
        return False

    def __repr__(self):
        return "<undefined>"


undefined = _Undefined()  #: "not given": the daemon's default applies


def get_callable_name(func):
    """The display name of a callable (apscheduler.util.get_callable_name)."""
    if hasattr(func, "__qualname__"):
        return func.__qualname__
    f_self = getattr(func, "__self__", None)
    if f_self is not None and hasattr(func, "__name__"):
        f_class = f_self if inspect.isclass(f_self) else f_self.__class__
        return "%s.%s" % (f_class.__name__, func.__name__)
    if hasattr(func, "__call__"):
        if hasattr(func, "__name__"):
            return func.__name__
        return func.__class__.__qualname__
    raise TypeError("Unable to determine a name for %r -- maybe it is not a callable?" % func)


def obj_to_ref(obj):
    """"module:qualname" of a callable (apscheduler.util.obj_to_ref).
    ValueError for partials, lambdas and nested functions, which no other
    process can import."""
    if isinstance(obj, functools.partial):
        raise ValueError("Cannot create a reference to a partial()")
    name = get_callable_name(obj)
    if "<lambda>" in name:
        raise ValueError("Cannot create a reference to a lambda")
    if "<locals>" in name:
        raise ValueError("Cannot create a reference to a nested function")
    module = getattr(obj, "__module__", None)
    if inspect.ismethod(obj):
        module = obj.__func__.__module__
    if not module:
        raise ValueError("Cannot determine the module of %r" % (obj,))
    return "%s:%s" % (module, name)


def ref_to_obj(ref):
    """The object a "module:qualname" reference names
    (apscheduler.util.ref_to_obj): imports the module, then walks the
    attributes. LookupError if either fails, ValueError if malformed."""
    if not isinstance(ref, str):
        raise TypeError("References must be strings")
    if ":" not in ref:
        raise ValueError("Invalid reference %r: expected 'module:function'" % ref)
    modulename, rest = ref.split(":", 1)
    try:
        obj = importlib.import_module(modulename)
    except ImportError as e:
        raise LookupError("Error resolving reference %s: could not import module (%s)" % (ref, e)) from None
    try:
        for name in rest.split("."):
            obj = getattr(obj, name)
        return obj
    except Exception:
        raise LookupError("Error resolving reference %s: error looking up object" % ref) from None
