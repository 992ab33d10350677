"""DeepFM as DeepCTR builds it, for either Keras front end: the model that `docs/porting.md`
ports and `tools/benchmark_deepfm.py` measures.

DeepCTR's `DeepFM` (0.9.4) with sparse features only and its defaults: per field, a linear
(dimension 1) and a deep embedding table, each with an `l2` embeddings regularizer (1e-5 by
default, and attached even at 0); an FM term over the deep embeddings; a ReLU network
(256, 128, 64) on their concatenation, whose kernels carry `l2(l2_reg_dnn)`; the sum of the three
logits and a bias through a sigmoid. The regularizers make every table's gradient dense; one
extra line, `tf_ftrl.sparse_regularizers(model)`, makes them sparse again. A Keras 3 model saved
to `.keras` loads after `import tf_ftrl.examples.deepfm`; the loaded model's tables carry their
regularizers again, so call `sparse_regularizers` again.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_ftrl.examples.criteo_data import NUM_CATEGORICAL, SyntheticCriteo


# Registered, so that a Keras 3 model saved to .keras loads after importing this module.
@keras.saving.register_keras_serializable(package="tf_ftrl.examples.deepfm")
def _fm(embeddings):
    # 0.5 * sum over dimensions of ((sum_i v_i)^2 - sum_i v_i^2), for v_i the fields' vectors.
    square_of_sum = tf.square(tf.reduce_sum(embeddings, axis=1))
    sum_of_squares = tf.reduce_sum(tf.square(embeddings), axis=1)
    return 0.5 * tf.reduce_sum(square_of_sum - sum_of_squares, axis=1, keepdims=True)


def build(keras_module, fields=NUM_CATEGORICAL, vocabulary=1_000_000, embedding_dim=4,
          hidden_units=(256, 128, 64), l2_reg_embedding=1e-5, l2_reg_linear=1e-5,
          l2_reg_dnn=0.0, seed=1024):
    """The DeepFM model, built with `keras_module` (`keras` for Keras 3, or `tf_keras`).

    Its inputs are `fields` int32 tensors of shape (batch, 1), named `C1`, `C2`, ...; its tables
    are the layers `linear_C<i>` and `sparse_emb_C<i>`, of `vocabulary` rows each.
    """
    layers, l2 = keras_module.layers, keras_module.regularizers.l2
    initializers = keras_module.initializers
    inputs = [layers.Input((1,), dtype="int32", name=f"C{i + 1}") for i in range(fields)]

    def tables(prefix, dim, strength, offset):
        return [layers.Embedding(
            vocabulary, dim, name=f"{prefix}_C{i + 1}", embeddings_regularizer=l2(strength),
            embeddings_initializer=initializers.RandomNormal(0.0, 1e-4, seed + offset + i))
            for i in range(fields)]

    linear = [table(x) for table, x in zip(tables("linear", 1, l2_reg_linear, 0), inputs)]
    deep = [table(x) for table, x in zip(
        tables("sparse_emb", embedding_dim, l2_reg_embedding, fields), inputs)]
    linear_logit = layers.Flatten()(layers.Add()(linear) if fields > 1 else linear[0])
    stacked = layers.Concatenate(axis=1)(deep) if fields > 1 else deep[0]
    fm_logit = layers.Lambda(_fm, output_shape=(1,), name="fm")(stacked)
    x = layers.Flatten()(stacked)
    for i, units in enumerate(hidden_units):
        x = layers.Dense(units, activation="relu", kernel_regularizer=l2(l2_reg_dnn),
                         kernel_initializer=initializers.GlorotNormal(seed + i))(x)
    dnn_logit = layers.Dense(1, use_bias=False,
                             kernel_initializer=initializers.GlorotNormal(seed))(x)
    logit = layers.Add()([linear_logit, fm_logit, dnn_logit])
    output = layers.Dense(1, activation="sigmoid", name="prediction",
                          kernel_initializer="ones", bias_initializer="zeros",
                          trainable=True)(logit)
    return keras_module.Model(inputs, output)


def synthetic_examples(n, fields=NUM_CATEGORICAL, vocabulary=1_000_000, values=100_000, seed=0,
                       data_seed=1):
    """(inputs as {name: int32 array (n, 1)}, labels (n, 1) float32) from the synthetic Criteo
    generator's categorical columns (a hidden logistic model over `values` Zipf-distributed
    values per column), each value hashed to a row of a `vocabulary`-row table; a missing
    value is row 0."""
    generator = SyntheticCriteo(seed=seed, vocabulary_size=values)
    labels, _, _, categorical, _, missing = generator.sample(n, np.random.default_rng(data_seed))
    rows = (generator.value_ids[np.arange(NUM_CATEGORICAL), categorical] % (vocabulary - 1)) + 1
    rows = np.where(missing, 0, rows).astype(np.int32)
    inputs = {f"C{i + 1}": rows[:, i % NUM_CATEGORICAL:i % NUM_CATEGORICAL + 1]
              for i in range(fields)}
    return inputs, labels.astype(np.float32).reshape(-1, 1)
