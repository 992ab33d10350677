"""The Keras model the distribute and saving workers train: ids -> Embedding -> Flatten ->
Dense(1), so that the table gets a sparse gradient (duplicate ids summed) and the rest dense ones.
Imports Keras when called, not when imported."""


def embedding_regression_model(vocabulary, embedding_dim, ids_per_example, sequential=False):
    """Embedding, Flatten, Dense(1): a functional model, or a Sequential one (whose variables'
    paths start "sequential/" where a loaded copy's do not)."""
    import keras

    if sequential:
        return keras.Sequential([keras.Input(shape=(ids_per_example,), dtype="int32"),
                                 keras.layers.Embedding(vocabulary, embedding_dim),
                                 keras.layers.Flatten(), keras.layers.Dense(1)])
    inputs = keras.Input(shape=(ids_per_example,), dtype="int32")
    x = keras.layers.Embedding(vocabulary, embedding_dim)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1)(x)
    return keras.Model(inputs, outputs)
