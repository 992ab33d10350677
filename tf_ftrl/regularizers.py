"""`tf_ftrl.sparse_regularizers`: embedding regularizers as a penalty on the looked-up rows, so
that a regularized embedding table keeps getting sparse gradients (and sparse updates)."""

import sys

import tensorflow as tf


def _embedding_classes():
    """The Embedding layer classes of the Keras front ends imported in this process."""
    classes = []
    if "keras" in sys.modules:
        import keras
        classes.append((keras.layers.Embedding, keras.regularizers, "keras"))
    if "tf_keras" in sys.modules:
        import tf_keras
        classes.append((tf_keras.layers.Embedding, tf_keras.regularizers, "tf_keras"))
    return classes


def _strengths(regularizer, regularizers_module):
    """(l1, l2) of a Keras L1, L2 or L1L2 regularizer; None for any other."""
    if not isinstance(regularizer, (regularizers_module.L1, regularizers_module.L2,
                                    regularizers_module.L1L2)):
        return None
    return float(getattr(regularizer, "l1", 0.0)), float(getattr(regularizer, "l2", 0.0))


def _describe(l1, l2):
    if l1 and l2:
        return f"L1L2(l1={l1:g}, l2={l2:g})"
    return f"L1({l1:g})" if l1 else f"L2({l2:g})"


def _remove_dense_penalty(layer, front_end):
    """Stops the table's regularizer from adding its whole-table penalty to the model's losses."""
    table = layer.embeddings
    if front_end == "keras":
        # Keras 3 adds variable.regularizer(variable) for each trainable weight.
        table.regularizer = None
    else:
        # tf_keras keeps one callable loss per regularized weight: a partial of the weight (in
        # a partial that tags the loss).
        layer._callable_losses[:] = [loss for loss in layer._callable_losses
                                     if not _is_partial_of(loss, table)]


def _is_partial_of(function, variable):
    arguments = getattr(function, "args", ())
    return any(a is variable or _is_partial_of(a, variable) for a in arguments)


def looked_up_rows_penalty(table, ids, l1, l2):
    """`l1 * sum(|w|) + l2 * sum(w^2)` over the rows of `table` that `ids` look up, each row
    once however often it is looked up: its gradient is a `tf.IndexedSlices` whose rows are
    those of a whole-table penalty's gradient at the looked-up rows (`2 * l2 * w + l1 *
    sign(w)`), and nothing elsewhere."""
    ids = tf.convert_to_tensor(ids)
    if not ids.dtype.is_integer:
        ids = tf.cast(ids, tf.int32)
    rows = tf.gather(table, tf.unique(tf.reshape(ids, [-1])).y)
    penalty = tf.constant(0.0, rows.dtype)
    if l1:
        penalty += tf.cast(l1, rows.dtype) * tf.reduce_sum(tf.abs(rows))
    if l2:
        penalty += tf.cast(l2, rows.dtype) * tf.reduce_sum(tf.square(rows))
    return penalty


def _add_sparse_penalty(layer, l1, l2):
    strengths = getattr(layer, "_tf_ftrl_sparse_penalty", None)
    if strengths is not None:
        # Already rewritten: keep the one wrapper, with the new strengths.
        strengths[:] = [l1, l2]
        return
    strengths = [l1, l2]
    original_call = layer.call

    def call(inputs, *args, **kwargs):
        outputs = original_call(inputs, *args, **kwargs)
        if any(strengths):
            layer.add_loss(looked_up_rows_penalty(layer.embeddings, inputs, *strengths))
        return outputs

    layer._tf_ftrl_sparse_penalty = strengths
    layer.call = call


def sparse_regularizers(model):
    """Turns the embedding regularizers of `model` into the same penalty on the looked-up rows.

    A regularizer on an embedding table (`Embedding(..., embeddings_regularizer=l2(1e-5))`, as
    DeepCTR and many CTR models attach to every table, even at strength 0) adds a penalty on the
    whole table, whose gradient is dense: every row of the table and of its optimizer slots is
    then rewritten every step, by any optimizer. Call this once after building (or loading) the
    model, before training. For each `Embedding` layer of `model` (Keras 3 or tf_keras, nested
    layers included) whose regularizer is `L1`, `L2` or `L1L2`:

    - at strength 0 (`l2(0)`) the regularizer is dropped;
    - otherwise its penalty is computed, at each call of the layer, on the rows that the call
      looks up, each row once however often it is looked up in the batch. The gradient on those
      rows is exactly the whole-table penalty's (`2 * l2 * w + l1 * sign(w)`), and it is a
      sparse gradient, so the sparse kernels run.

    What differs from the whole-table penalty: rows that a batch does not look up do not decay
    in that step, and the loss that Keras reports includes the penalty of the looked-up rows
    only. Other regularizers (a custom callable) are left as they are, and so is any layer that
    is not an `Embedding`. The layer's config still names its regularizer, so a model saved and
    loaded again needs this call again. A model that has already trained may be given it too
    (its step functions are traced again). Calling it twice changes nothing more.

    Args:
        model: A Keras 3 or tf_keras model or layer.

    Returns:
        `{layer name: what was done}` for every regularized `Embedding` layer.
    """
    classes = _embedding_classes()
    done = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for embedding_class, regularizers_module, front_end in classes:
            if isinstance(layer, embedding_class):
                break
        else:
            continue
        regularizer = layer.embeddings_regularizer
        if regularizer is None:
            continue
        strengths = _strengths(regularizer, regularizers_module)
        if strengths is None:
            done[layer.name] = (f"left as it is: {type(regularizer).__name__} is not an L1, L2 "
                                f"or L1L2 regularizer (its gradient stays dense)")
            continue
        if not layer.built:
            raise ValueError(
                f"tf_ftrl.sparse_regularizers: the Embedding layer '{layer.name}' is not built "
                f"yet; call it on its inputs (build the model) first.")
        _remove_dense_penalty(layer, front_end)
        l1, l2 = strengths
        if not l1 and not l2:
            if getattr(layer, "_tf_ftrl_sparse_penalty", None) is not None:
                layer._tf_ftrl_sparse_penalty[:] = [0.0, 0.0]
            done[layer.name] = "dropped: the regularizer has strength 0"
            continue
        _add_sparse_penalty(layer, l1, l2)
        done[layer.name] = f"{_describe(l1, l2)} on the looked-up rows"
    if done:
        # A model that has trained (or evaluated) keeps its traced step functions, which hold
        # the whole-table penalty: trace them again.
        for name in ("train_function", "test_function", "predict_function"):
            if getattr(model, name, None) is not None:
                setattr(model, name, None)
    return done
